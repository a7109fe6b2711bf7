// An image path with a character outside the BMP (an emoji): the image is written under that very
// name, as the JDK's own file APIs would name it (it went to the name's modified UTF-8, each half
// of the surrogate pair encoded apart); a message naming such a path names it as it is. Run as `java ImagePath DIR KEY`; the first life goes on.
import dev.thaw.Restored;
import dev.thaw.Thaw;
import dev.thaw.ThawException;
import java.io.File;

public class ImagePath {
    public static void main(String[] args) throws Exception {
        String image = args[0] + "/img-\uD83D\uDE00.thaw";
        try {
            Thaw.checkpoint(args[0] + "/nul\0.thaw", null, false);
            System.out.println("FAIL a path with a NUL saved");
        } catch (ThawException e) {
            System.out.println("nul code " + e.code() + ": " + e.getMessage());
        }
        try {
            Thaw.checkpoint(args[0] + "/missing-\uD83D\uDE00/x.thaw", null, false);
            System.out.println("FAIL saved in a missing directory");
        } catch (ThawException e) {
            // (The message names the path: its characters as they are.)
            System.out.println("missing code " + e.code() + ": named " + e.getMessage().contains("/missing-\uD83D\uDE00"));
        }
        Restored r = Thaw.checkpoint(image, args[1], false);
        if (r == null) {
            System.out.println("first life: saved " + new File(image).exists());
        } else {
            System.out.println("restored " + r.args());
        }
    }
}
