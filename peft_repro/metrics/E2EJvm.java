/*
 * The Java half of the E2E metrics in one JVM, driven (and compiled) by peft_repro/metrics/_coco.py:
 * java -cp <stanford-corenlp-3.4.1.jar>:<meteor-1.5.jar>:<classes> E2EJvm SENTENCES METEOR
 *
 * 1. Stanford PTBTokenizer (-preserveLines -lowerCase) on the file SENTENCES, exactly as pycocoevalcap runs it,
 *    then the line "PTB-DONE" (the tokenizer lowercases, so it cannot print that line itself).
 * 2. If METEOR is "true": METEOR 1.5 (-l en -norm) on pycocoevalcap's "SCORE ||| ref ||| ... ||| hyp" lines read
 *    from stdin until EOF; prints the score of the pooled statistics, as pycocoevalcap's EVAL line does.
 */
import edu.cmu.meteor.scorer.MeteorConfiguration;
import edu.cmu.meteor.scorer.MeteorScorer;
import edu.cmu.meteor.scorer.MeteorStats;
import edu.stanford.nlp.process.PTBTokenizer;
import java.io.BufferedReader;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.concurrent.FutureTask;

public class E2EJvm {
    public static void main(String[] args) throws Exception {
        boolean withMeteor = Boolean.parseBoolean(args[1]);
        // loading METEOR's paraphrase table takes seconds: overlap it with the tokenizer
        FutureTask<MeteorScorer> meteor = new FutureTask<>(E2EJvm::loadMeteor);
        if (withMeteor) {
            Thread loader = new Thread(meteor);
            loader.setDaemon(true);  // a failing tokenizer should not wait for it
            loader.start();
        }
        tokenize(args[0]);
        if (withMeteor) {
            System.out.println(meteorScore(meteor.get()));
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
        PTBTokenizer.main(new String[] {"-preserveLines", "-lowerCase", path});
        System.setOut(out);
        out.println();
        out.println("PTB-DONE");
        out.flush();
    }

    /** Meteor's stdio mode as pycocoevalcap uses it: SCORE each segment, then EVAL all of their stats. */
    static double meteorScore(MeteorScorer scorer) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        MeteorStats total = new MeteorStats();
        for (String line = in.readLine(); line != null; line = in.readLine()) {
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
}
