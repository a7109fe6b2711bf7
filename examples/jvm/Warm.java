// A stock JVM, started by the `java` launcher (main() runs on a second thread), warms up and
// checkpoints through a minimal JNI bridge: java.nio.file (which keeps the JDK's half-closed
// "pre-close" socket pair), a thread pool, a map, GC of the configured collector (ZGC keeps its
// heap in a memfd mapped three times). After restore it uses all of them and prints `ok`.
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

public class Warm {
    static native int checkpoint(String image, String key);
    static native String lastError();

    public static void main(String[] args) throws Exception {
        System.loadLibrary("thaw_jni");
        int lines = Files.readAllLines(Paths.get("/etc/passwd")).size();
        Map<Integer, String> map = new HashMap<>();
        for (int i = 0; i < 200_000; i++) map.put(i, "v" + i);
        ExecutorService pool = Executors.newFixedThreadPool(4);
        for (Future<Integer> f : submit(pool, 8)) f.get();
        long pid = ProcessHandle.current().pid();
        int r = checkpoint(args[0], args[1]);
        if (r < 0) {
            System.out.println("checkpoint failed: " + lastError());
            System.exit(2);
        }
        // Second life (THAW_EXIT_AFTER_SAVE ended the first).
        check(ProcessHandle.current().pid() == pid, "same pid");
        long sum = 0;
        for (Future<Integer> f : submit(pool, 16)) sum += f.get(30, TimeUnit.SECONDS);
        check(sum == 120, "thread pool");
        List<byte[]> keep = new ArrayList<>();
        for (int i = 0; i < 100; i++) {
            byte[] b = new byte[1 << 20];
            b[i] = (byte) i;
            if (i % 10 == 0) keep.add(b);
        }
        System.gc();
        for (int i = 0; i < keep.size(); i++) check(keep.get(i)[i * 10] == (byte) (i * 10), "heap after GC");
        for (int i = 0; i < 20; i++) check(Files.readAllLines(Paths.get("/etc/passwd")).size() == lines, "java.nio.file");
        long[] t = new long[1];
        Thread th = new Thread(() -> t[0] = 42, "second-life");
        th.start();
        th.join();
        check(t[0] == 42, "new thread");
        check("v12345".equals(map.get(12345)), "map");
        pool.shutdown();
        check(pool.awaitTermination(10, TimeUnit.SECONDS), "pool shutdown");
        System.out.println("ok");
        System.exit(0);
    }

    static List<Future<Integer>> submit(ExecutorService pool, int n) {
        List<Future<Integer>> fs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            final int k = i;
            fs.add(pool.submit(() -> k));
        }
        return fs;
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            System.out.println("FAIL " + what);
            System.exit(1);
        }
    }
}
