// thaw's own Java API and what dev.thaw.crac adds to org.crac's shape: errors with libthaw's
// message, no image configured, priorities, a first life that goes on, the restored arguments and
// environment. Run as `java ThawApi IMAGE KEY`; restored with `thaw run IMAGE -- ARGS`.
import dev.thaw.Restored;
import dev.thaw.Thaw;
import dev.thaw.ThawException;
import dev.thaw.crac.CheckpointException;
import dev.thaw.crac.Context;
import dev.thaw.crac.Core;
import dev.thaw.crac.Resource;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public class ThawApi {
    static final List<String> log = Collections.synchronizedList(new ArrayList<>());

    record Named(String name) implements Resource {
        @Override
        public void beforeCheckpoint(Context<? extends Resource> context) {
            log.add("before " + name);
        }

        @Override
        public void afterRestore(Context<? extends Resource> context) {
            log.add("after " + name);
        }
    }

    public static void main(String[] args) throws Exception {
        String image = args[0], key = args[1];
        try {
            Thaw.checkpoint("/nonexistent-thaw-dir/x.thaw", key, true);
            System.out.println("FAIL bad image saved");
        } catch (ThawException e) {
            System.out.println("bad image code " + e.code() + ": " + e.getMessage());
        }
        System.clearProperty("thaw.image");
        try {
            Core.checkpointRestore();
            System.out.println("FAIL no image configured");
        } catch (UnsupportedOperationException e) {
            System.out.println("no image: " + e.getMessage());
        }
        List<Named> keep = List.of(new Named("late"), new Named("app1"), new Named("app2"), new Named("pool"));
        Core.getContext(10).register(keep.get(0));
        Core.getGlobalContext().register(keep.get(1));
        Core.getGlobalContext().register(keep.get(2));
        Core.getContext(-10).register(keep.get(3));
        System.setProperty("thaw.image", "/nonexistent-thaw-dir/y.thaw");
        try {
            Core.checkpointRestore();
            System.out.println("FAIL bad image saved");
        } catch (CheckpointException e) {
            System.out.println("crac bad image: " + e.getSuppressed()[0].getMessage());
            System.out.println("crac bad image log " + String.join(",", log));
        }
        log.clear();
        System.setProperty("thaw.image", image);
        System.setProperty("thaw.key", key);
        System.setProperty("thaw.exitAfterSave", "false");
        Core.checkpointRestore();
        Restored r = Thaw.restored();
        if (r == null) {
            System.out.println("first life goes on, log " + String.join(",", log));
            System.exit(0);
        }
        System.out.println("restored log " + String.join(",", log));
        System.out.println("restored args " + r.args());
        System.out.println("restored env ZDTM_ENV=" + r.getenv("ZDTM_ENV"));
        System.exit(0);
    }
}
