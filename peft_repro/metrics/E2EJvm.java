/*
 * The Java half of the E2E metrics, one JVM that serves every evaluation of its Python process, driven (and
 * compiled) by peft_repro/metrics/_coco.py:
 * java -cp <stanford-corenlp-3.4.1.jar>:<meteor-1.5.jar>:<classes> E2EJvm FOLDER
 *
 * Commands, one per line on stdin; the JVM exits when stdin ends (its Python process closed it or died), removing
 * FOLDER (the Python side's temporary folder):
 * - "LOAD-METEOR": start loading METEOR 1.5 (-l en -norm) in the background (seconds: its paraphrase table), once.
 * - "TOKENIZE <file>": Stanford PTBTokenizer (-preserveLines -lowerCase) on the file, exactly as pycocoevalcap runs
 *   it, then the line "PTB-DONE" (the tokenizer lowercases, so it cannot print that line itself).
 * - "METEOR", then pycocoevalcap's "SCORE ||| ref ||| ... ||| hyp" lines, then "METEOR-END": prints the score of
 *   the pooled statistics, as pycocoevalcap's EVAL line does.
 * Any error ends the JVM with its message on stderr.
 */
import edu.cmu.meteor.scorer.MeteorConfiguration;
import edu.cmu.meteor.scorer.MeteorScorer;
import edu.cmu.meteor.scorer.MeteorStats;
import edu.stanford.nlp.process.PTBTokenizer;
import java.io.BufferedReader;
import java.io.File;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.concurrent.FutureTask;

public class E2EJvm {
    static final String METEOR_END = "METEOR-END";

    public static void main(String[] args) throws Exception {
        File folder = args.length > 0 ? new File(args[0]) : null;
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        FutureTask<MeteorScorer> meteor = null;
        try {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                if (line.equals("LOAD-METEOR") || line.equals("METEOR")) {
                    if (meteor == null) {
                        // overlap loading METEOR's paraphrase table with the tokenizer
                        meteor = new FutureTask<>(E2EJvm::loadMeteor);
                        Thread loader = new Thread(meteor);
                        loader.setDaemon(true);  // a failing tokenizer should not wait for it
                        loader.start();
                    }
                    if (line.equals("METEOR")) {
                        System.out.println(meteorScore(meteor.get(), in));
                        System.out.flush();
                    }
                } else if (line.startsWith("TOKENIZE ")) {
                    tokenize(line.substring("TOKENIZE ".length()));
                } else {
                    throw new IllegalArgumentException("unknown command: " + line);
                }
            }
        } finally {
            if (folder != null) {
                removeFolder(folder);
            }
        }
    }

    /** The scorer Meteor.main builds for "- - -stdio -l en -norm" (pycocoevalcap's command line). */
    static MeteorScorer loadMeteor() {
        String[] args = {"-", "-", "-l", "en", "-norm"};
        return new MeteorScorer(new MeteorConfiguration(Meteor.createPropertiesFromArgs(args, 2)));
    }

    static void tokenize(String path) throws IOException {
        PrintStream out = System.out;
        // PTBTokenizer.main closes System.out when done: lend it a stream whose close only flushes
        System.setOut(new PrintStream(new FilterOutputStream(out) {
            @Override
            public void close() throws IOException {
                flush();
            }
        }));
        try {
            PTBTokenizer.main(new String[] {"-preserveLines", "-lowerCase", path});
        } finally {
            System.setOut(out);
        }
        out.println();
        out.println("PTB-DONE");
        out.flush();
    }

    /** Meteor's stdio mode as pycocoevalcap uses it: SCORE each segment, then EVAL all of their stats. */
    static double meteorScore(MeteorScorer scorer, BufferedReader in) throws IOException {
        MeteorStats total = new MeteorStats();
        for (String line = in.readLine(); !METEOR_END.equals(line); line = in.readLine()) {
            if (line == null) {
                throw new IOException("input ended inside a METEOR command");
            }
            // the stats travel as text in pycocoevalcap (SCORE prints them, EVAL parses them): keep that rounding
            MeteorStats stats = new MeteorStats(segmentStats(scorer, line));
            scorer.computeMetrics(stats);
            total.addStats(stats);
        }
        scorer.computeMetrics(total);
        return total.score;
    }

    /** What Meteor's stdio mode prints for a "SCORE ||| ref ||| ... ||| hyp" line. */
    static String segmentStats(MeteorScorer scorer, String line) {
        String[] parts = line.split("\\|\\|\\|");
        ArrayList<String> refs = new ArrayList<>();
        for (int i = 1; i < parts.length - 1; i++) {
            refs.add(parts[i].trim());
        }
        return scorer.getMeteorStats(parts[parts.length - 1].trim(), refs).toString();
    }

    static void removeFolder(File folder) {
        File[] files = folder.listFiles();
        if (files != null) {
            for (File file : files) {
                file.delete();
            }
        }
        folder.delete();
    }
}
