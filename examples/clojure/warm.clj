;; A Clojure program started by Debian's `clojure` command, which warms up (loads and compiles
;; much of Clojure's standard library, evaluates and JIT-compiles a request path), checkpoints
;; through thaw's Java library, and after every restore evaluates the expression passed to
;; `thaw run IMAGE -- EXPR`, printing the value as its first line, as a cold run does.
;;
;;   sdk/java/build.sh out
;;   clojure -cp out/thaw.jar examples/clojure/warm.clj --cold '(frequencies "mississippi")'
;;   clojure -cp out/thaw.jar examples/clojure/warm.clj app.thaw k.key   # warm, save, exit
;;   thaw run --trust k.pub app.thaw -- '(frequencies "mississippi")'
(ns warm
  (:require [clojure.string :as str]
            [clojure.set :as set]
            [clojure.walk :as walk]
            [clojure.edn :as edn]
            [clojure.pprint :as pp]
            [clojure.data :as data]
            [clojure.zip :as zip]
            [clojure.core.protocols]
            [clojure.java.io :as io])
  (:import (dev.thaw Thaw)))

(defn answer
  "Reads and evaluates `expr` in this namespace; the printed value."
  [expr]
  (binding [*ns* (the-ns 'warm)]
    (str/trim-newline (with-out-str (pp/pprint (eval (read-string expr)))))))

;; Warm-up: every library above used once, then a few thousand forms compiled by the Clojure
;; compiler (each a class of its own) and the request path run until the JIT has compiled it.
(defn warm-up []
  (let [words (str/split (slurp (io/file "/usr/share/common-licenses/GPL-3")) #"\s+")
        freq (frequencies (map str/lower-case words))]
    (set/union (set (keys freq)) #{"thaw"})
    (walk/postwalk identity (edn/read-string (pr-str (take 200 freq))))
    (data/diff {:a 1 :b [1 2]} {:a 2 :b [1 3]})
    (-> (zip/vector-zip [1 [2 3] [4 [5]]]) zip/down zip/right zip/node)
    (dotimes [i 300]
      (eval `(fn [x#] (+ x# ~i))))
    (dotimes [i 300]
      (answer (str "(reduce + (map #(* % " i ") (range 100)))")))
    (count freq)))

(let [[a b] *command-line-args*]
  (if (= a "--cold")
    (do (warm-up) (println (answer b)))
    (do
      (warm-up)
      (let [restored (Thaw/checkpoint a b true)
            expr (or (first (.args restored)) "nil")]
        (println (answer expr))
        (flush)
        (shutdown-agents)))))
