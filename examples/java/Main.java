// A Java service that warms up, checkpoints with thaw from main() through the CRaC-shaped API, and
// answers a request after every restore with the answer a cold start gives.
//
//   sdk/java/build.sh out && javac -cp out/thaw.jar -d classes examples/java/Main.java
//   java -cp out/thaw.jar:classes Main --cold "order 3 widget-7 and 2 gadget-12 by 2026-03-14"
//   java -Dthaw.image=app.thaw -Dthaw.key=k.key -cp out/thaw.jar:classes Main   # warm, save, exit
//   thaw run --trust k.pub app.thaw -- "order 3 widget-7 and 2 gadget-12 by 2026-03-14"
//
// The answer is the first line printed. With --report (first life: as an argument; second life:
// the first argument after `--`) it then prints what the tests compare: pid, every thread (TID and
// name as /proc shows them, Java names), random draws, GC and a new thread after the restore.
import dev.thaw.Restored;
import dev.thaw.Thaw;
import dev.thaw.crac.Context;
import dev.thaw.crac.Core;
import dev.thaw.crac.Resource;
import java.io.ByteArrayInputStream;
import java.lang.reflect.Method;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.time.LocalDate;
import java.time.ZoneId;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import javax.xml.parsers.DocumentBuilderFactory;
import org.w3c.dom.Element;
import org.w3c.dom.NodeList;

public class Main {
    static final int WORKERS = 4;
    static final Pattern WORD = Pattern.compile("[\\p{L}\\p{N}][\\p{L}\\p{N}-]*");
    static final Pattern DATE = Pattern.compile("(\\d{4})-(\\d{2})-(\\d{2})");
    static final Pattern QUANTITY = Pattern.compile("\\d{1,3}");
    static final DateTimeFormatter DUE =
            DateTimeFormatter.ofPattern("EEEE d MMMM uuuu 'at' HH:mm zzz", Locale.UK);

    record Item(String id, String name, String category, BigDecimal price) {}

    final Map<String, Item> catalog = new TreeMap<>();
    final List<List<Item>> shards = new ArrayList<>();
    final Map<String, Method> operations = new TreeMap<>();
    ExecutorService pool;
    String catalogId;

    public static void main(String[] args) throws Exception {
        List<String> a = new ArrayList<>(Arrays.asList(args));
        boolean cold = a.remove("--cold");
        boolean report = a.remove("--report");
        Main app = new Main();
        app.init();
        if (cold) {
            System.out.println(app.answer(String.join(" ", a)));
            app.pool.shutdown();
            return;
        }
        app.warm();
        // Pool threads that drew from ThreadLocalRandom in the first life (each worker once).
        app.onEveryWorker(() -> ThreadLocalRandom.current().nextLong());
        if (report) app.report("first", Math.random());
        // The executor has nothing to close for thaw (threads and in-process state come back);
        // a resource is where sockets to other processes would be closed and reopened.
        Resource log = new Resource() {
            @Override
            public void beforeCheckpoint(Context<? extends Resource> c) {}

            @Override
            public void afterRestore(Context<? extends Resource> c) {}
        };
        Core.getGlobalContext().register(log);
        Core.checkpointRestore();
        // Second life. With --report, the threads are gathered first, before anything can start
        // or end one; without, nothing stands before the answer.
        Restored r = Thaw.restored();
        List<String> req = new ArrayList<>(r == null ? List.of() : r.args());
        report = req.remove("--report");
        List<String> tasks = report ? tasks() : List.of();
        List<String> javaThreads = report ? javaThreads() : List.of();
        System.out.println(app.answer(String.join(" ", req)));
        if (report) {
            System.out.println("pid " + ProcessHandle.current().pid());
            tasks.forEach(System.out::println);
            javaThreads.forEach(System.out::println);
            app.report("restored", Math.random());
            app.secondLifeChecks();
        }
        app.pool.shutdown();
        if (!app.pool.awaitTermination(30, TimeUnit.SECONDS)) throw new IllegalStateException("pool");
        System.exit(0);
    }

    /** Loads what every request needs: the catalog (XML), the operations (reflection), a pool. */
    void init() throws Exception {
        var doc = DocumentBuilderFactory.newInstance()
                .newDocumentBuilder()
                .parse(new ByteArrayInputStream(catalogXml().getBytes(StandardCharsets.UTF_8)));
        NodeList items = doc.getElementsByTagName("item");
        for (int i = 0; i < items.getLength(); i++) {
            Element e = (Element) items.item(i);
            Item it = new Item(e.getAttribute("id"), e.getAttribute("name"),
                    e.getAttribute("category"), new BigDecimal(e.getTextContent().trim()));
            catalog.put(it.name(), it);
        }
        // The catalog's identity: its canonical form (javax.xml.transform) and an XPath count.
        var out = new java.io.StringWriter();
        var tf = javax.xml.transform.TransformerFactory.newInstance().newTransformer();
        tf.setOutputProperty(javax.xml.transform.OutputKeys.INDENT, "no");
        tf.transform(new javax.xml.transform.dom.DOMSource(doc), new javax.xml.transform.stream.StreamResult(out));
        double tools = (Double) javax.xml.xpath.XPathFactory.newInstance().newXPath()
                .evaluate("count(/catalog/item[@category='tools'])", doc, javax.xml.xpath.XPathConstants.NUMBER);
        catalogId = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256")
                .digest(out.toString().getBytes(StandardCharsets.UTF_8)), 0, 4) + "/" + (int) tools;
        java.util.logging.Logger.getLogger("catalog").fine(() -> "catalog " + catalogId);
        for (int i = 0; i < WORKERS; i++) shards.add(new ArrayList<>());
        int i = 0;
        for (Item it : catalog.values()) shards.get(i++ % WORKERS).add(it);
        for (Method m : Main.class.getDeclaredMethods()) {
            if (m.getName().startsWith("op_")) operations.put(m.getName().substring(3), m);
        }
        AtomicInteger n = new AtomicInteger();
        pool = Executors.newFixedThreadPool(WORKERS, task -> {
            Thread t = new Thread(task, "worker-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
        ZoneId.of("Europe/Paris").getRules(); // the time-zone database
        if (loadFramework() == 0) throw new IllegalStateException("no framework");
    }

    /** The warm-up only a checkpointed process pays for: JIT-compiles the request path. */
    void warm() throws Exception {
        String[] ops = {"order", "price", "search", "echo"};
        long sink = 0;
        for (int i = 0; i < 4000; i++) {
            String req = ops[i % ops.length] + " " + (1 + i % 9) + " widget-" + (i % 50)
                    + " and gadget-" + (i % 30) + " by 2026-0" + (1 + i % 9) + "-1" + (i % 10);
            sink += answer(req).hashCode();
        }
        // Class loading across the JDK beyond the request path.
        sink += String.format(Locale.ROOT, "%08.3f", Math.PI).length();
        sink += List.of(3, 1, 2).stream().sorted().map(String::valueOf).collect(Collectors.joining()).length();
        sink += new java.util.zip.CRC32().getValue();
        sink += java.util.UUID.nameUUIDFromBytes(new byte[] {1}).hashCode();
        sink += java.net.URI.create("https://example.org/a?b=c").getQuery().length();
        sink += java.util.Base64.getEncoder().encodeToString(new byte[] {1, 2, 3}).length();
        try (DirectoryStream<Path> d = Files.newDirectoryStream(Paths.get("/proc/self"))) {
            for (Path p : d) sink += p.getFileName().toString().length();
        }
        // The answer's way out (stdout's encoder), as a request prints it.
        java.io.PrintStream sinkOut = new java.io.PrintStream(
                java.io.OutputStream.nullOutputStream(), true, java.nio.charset.Charset.defaultCharset());
        sinkOut.println(answer("order 1 widget-1 by 2026-01-01"));
        if (sink == 42) System.out.println();
    }

    /**
     * What a framework does at start: scans the platform's packages a web service uses and loads
     * and reflects on their public ones (about 2,700 classes loaded, 4,300 in all with the rest
     * of the service). A cold start pays for it every time; a restore never does.
     */
    static int loadFramework() throws Exception {
        var jrt = java.nio.file.FileSystems.getFileSystem(java.net.URI.create("jrt:/"));
        String[][] packages = {
            {"java.base", "java/util"}, {"java.base", "java/time"}, {"java.base", "java/net"},
            {"java.base", "java/text"}, {"java.base", "java/io"}, {"java.base", "java/nio"},
            {"java.base", "java/math"}, {"java.base", "java/security"}, {"java.xml", "javax/xml"},
            {"java.net.http", "java/net/http"}, {"java.sql", "java/sql"},
            {"java.logging", "java/util/logging"}, {"java.management", "javax/management"},
            {"java.naming", "javax/naming"},
        };
        int n = 0;
        for (String[] p : packages) {
            Path module = jrt.getPath("/modules", p[0]);
            try (var files = Files.walk(module.resolve(p[1]))) {
                for (Path f : (Iterable<Path>) files::iterator) {
                    String name = module.relativize(f).toString();
                    if (!name.endsWith(".class") || name.endsWith("module-info.class")) continue;
                    Class<?> c = Class.forName(
                            name.substring(0, name.length() - 6).replace('/', '.'), false, Main.class.getClassLoader());
                    if (java.lang.reflect.Modifier.isPublic(c.getModifiers())) n += c.getMethods().length;
                }
            }
        }
        return n;
    }

    /** The request path: tokens (regex), the operation (reflection), shards (the pool), dates. */
    String answer(String request) throws Exception {
        List<String> words = new ArrayList<>();
        Matcher m = WORD.matcher(request);
        while (m.find()) words.add(m.group().toLowerCase(Locale.ROOT));
        String op = words.isEmpty() || !operations.containsKey(words.get(0)) ? "echo" : words.get(0);
        String result = (String) operations.get(op).invoke(this, words);
        List<Future<Integer>> scores = new ArrayList<>();
        for (List<Item> shard : shards) {
            scores.add(pool.submit(() -> {
                int s = 0;
                for (Item it : shard) for (String w : words) if (it.category().equals(w)) s++;
                return s;
            }));
        }
        int score = 0;
        for (Future<Integer> f : scores) score += f.get();
        String due = "none";
        Matcher d = DATE.matcher(request);
        if (d.find()) {
            LocalDate day = LocalDate.of(Integer.parseInt(d.group(1)), Integer.parseInt(d.group(2)),
                    Math.min(28, Integer.parseInt(d.group(3))));
            due = ZonedDateTime.of(day.atTime(17, 30), ZoneId.of("Europe/Paris")).format(DUE);
        }
        byte[] digest = MessageDigest.getInstance("SHA-256")
                .digest((op + result + score + due).getBytes(StandardCharsets.UTF_8));
        return "answer " + op + ": " + result + "; category hits " + score + "; due " + due
                + "; catalog " + catalogId + "; digest " + HexFormat.of().formatHex(digest, 0, 8);
    }

    String op_order(List<String> words) {
        BigDecimal total = BigDecimal.ZERO;
        int quantity = 1;
        List<String> lines = new ArrayList<>();
        for (String w : words) {
            if (QUANTITY.matcher(w).matches()) {
                quantity = Integer.parseInt(w);
            } else if (catalog.containsKey(w)) {
                Item it = catalog.get(w);
                total = total.add(it.price().multiply(BigDecimal.valueOf(quantity)));
                lines.add(quantity + "x" + it.id());
                quantity = 1;
            }
        }
        return "order " + lines + " total " + total.setScale(2, RoundingMode.HALF_EVEN);
    }

    String op_price(List<String> words) {
        return "prices " + words.stream().filter(catalog::containsKey)
                .map(w -> w + "=" + catalog.get(w).price()).collect(Collectors.joining(","));
    }

    String op_search(List<String> words) {
        TreeSet<String> found = new TreeSet<>();
        for (String w : words.subList(1, words.size())) {
            for (Item it : catalog.values()) if (it.name().startsWith(w)) found.add(it.id());
        }
        return "found " + found.size() + " " + found.stream().limit(5).collect(Collectors.toList());
    }

    String op_echo(List<String> words) {
        return "words " + words.size() + " " + String.join("+", words);
    }

    static String catalogXml() {
        StringBuilder b = new StringBuilder("<?xml version=\"1.0\"?>\n<catalog>\n");
        String[] kinds = {"widget", "gadget", "gizmo", "sprocket"};
        String[] categories = {"tools", "garden", "kitchen", "office", "and", "by"};
        for (int i = 0; i < 2000; i++) {
            String kind = kinds[i % kinds.length];
            b.append("  <item id=\"I").append(10000 + i).append("\" name=\"").append(kind).append('-')
                    .append(i / kinds.length).append("\" category=\"")
                    .append(categories[(i * 7) % categories.length]).append("\">")
                    .append((i * 37) % 1000).append('.').append(String.format(Locale.ROOT, "%02d", i % 100))
                    .append("</item>\n");
        }
        return b.append("</catalog>\n").toString();
    }

    /** Runs `task` once on every worker (they all wait until each has one). */
    List<Long> onEveryWorker(java.util.concurrent.Callable<Long> task) throws Exception {
        CountDownLatch all = new CountDownLatch(WORKERS);
        List<Future<Long>> fs = new ArrayList<>();
        for (int i = 0; i < WORKERS; i++) {
            fs.add(pool.submit(() -> {
                all.countDown();
                all.await();
                return task.call();
            }));
        }
        List<Long> out = new ArrayList<>();
        for (Future<Long> f : fs) out.add(f.get(60, TimeUnit.SECONDS));
        Collections.sort(out);
        return out;
    }

    void report(String life, double mathRandom) throws Exception {
        if (life.equals("first")) {
            System.out.println("pid " + ProcessHandle.current().pid());
            tasks().forEach(System.out::println);
            javaThreads().forEach(System.out::println);
        }
        System.out.println("random math " + mathRandom);
        System.out.println("random tlr " + ThreadLocalRandom.current().nextLong());
        System.out.println("random workers " + onEveryWorker(() -> ThreadLocalRandom.current().nextLong()));
        System.out.println("random new " + new java.util.Random().nextLong());
        System.out.println("random splittable " + new java.util.SplittableRandom().nextLong());
        System.out.println("random uuid " + java.util.UUID.randomUUID());
    }

    /** GC after the restore (the catalog survives it), and a thread born in the second life. */
    void secondLifeChecks() throws Exception {
        String before = answer("order 2 widget-1 by 2026-01-01");
        List<byte[]> keep = new ArrayList<>();
        for (int i = 0; i < 256; i++) {
            byte[] b = new byte[1 << 20];
            b[i] = (byte) i;
            if (i % 16 == 0) keep.add(b);
        }
        System.gc();
        for (int i = 0; i < keep.size(); i++) {
            if (keep.get(i)[i * 16] != (byte) (i * 16)) throw new IllegalStateException("heap after GC");
        }
        if (!answer("order 2 widget-1 by 2026-01-01").equals(before)) throw new IllegalStateException("catalog after GC");
        System.out.println("gc ok");
        long[] got = new long[1];
        Thread t = new Thread(() -> got[0] = catalog.size(), "second-life");
        t.start();
        t.join();
        if (got[0] != catalog.size()) throw new IllegalStateException("new thread");
        System.out.println("new thread ok");
    }

    /** Every thread as /proc shows it: "task TID NAME", by TID. */
    static List<String> tasks() throws Exception {
        List<String> out = new ArrayList<>();
        try (DirectoryStream<Path> d = Files.newDirectoryStream(Paths.get("/proc/self/task"))) {
            for (Path p : d) {
                String comm = Files.readString(p.resolve("comm")).trim();
                out.add(p.getFileName() + " " + comm);
            }
        }
        out.sort((x, y) -> Integer.compare(Integer.parseInt(x.split(" ")[0]), Integer.parseInt(y.split(" ")[0])));
        out.replaceAll(s -> "task " + s);
        return out;
    }

    /** Every live Java thread's name: "jthread NAME", sorted. */
    static List<String> javaThreads() {
        return Thread.getAllStackTraces().keySet().stream().map(t -> "jthread " + t.getName()).sorted()
                .collect(Collectors.toList());
    }
}
