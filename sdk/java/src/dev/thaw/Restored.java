package dev.thaw;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What the second life was given: the arguments after {@code --} to {@code thaw run IMAGE -- ARGS}
 * and the environment of the {@code thaw run} caller. (The JVM's own {@code System.getenv()} and
 * {@code main()}'s arguments are still those of the first life.)
 */
public final class Restored {
    private final List<String> args;
    private final Map<String, String> env;

    Restored(String[] args, String[] env) {
        this.args = List.of(args);
        Map<String, String> m = new LinkedHashMap<>();
        for (String kv : env) {
            int eq = kv.indexOf('=');
            if (eq > 0) m.putIfAbsent(kv.substring(0, eq), kv.substring(eq + 1));
        }
        this.env = Collections.unmodifiableMap(m);
    }

    /** The arguments given after {@code --} to {@code thaw run}. */
    public List<String> args() {
        return args;
    }

    /** The arguments as an array (a fresh copy), e.g. to call a {@code main(String[])}. */
    public String[] argsArray() {
        return args.toArray(new String[0]);
    }

    /** The environment of the {@code thaw run} caller. */
    public Map<String, String> env() {
        return env;
    }

    /** One variable of the {@code thaw run} caller's environment, or null. */
    public String getenv(String name) {
        return env.get(name);
    }

    @Override
    public String toString() {
        return "Restored" + args;
    }
}
