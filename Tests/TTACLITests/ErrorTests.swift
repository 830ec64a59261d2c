import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTAModels
import TTATensor
@testable import TTACLI

/// Every error path: one line `tta: error: …` on stderr, 64 for usage errors, 1 for the rest.
@Suite struct ErrorTests {
    @Test func unknownOptionsSuggestTheClosest() {
        expectError(tta(["compare", "--batchsize", "8"]), "unknown option '--batchsize' for 'tta compare'; did you mean '--batch-size'?", code: 64)
        expectError(tta(["run", "--methods", "tent"]), "unknown option '--methods' for 'tta run'; did you mean '--method'?", code: 64)
        expectError(tta(["compare", "--frobnicate"]), "unknown option '--frobnicate' for 'tta compare'; see 'tta compare --help'", code: 64)
        expectError(tta(["predict", "--setting", "continual"]), "unknown option '--setting' for 'tta predict'; see 'tta predict --help'", code: 64)
        expectError(tta(["compare", "-q"]), "unknown option '-q' for 'tta compare'; see 'tta compare --help'", code: 64)
    }

    @Test func badValuesNameTheOptionAndWhatWasExpected() {
        expectError(tta(["compare", "--batch-size", "x"]), "invalid value 'x' for '--batch-size': expected a positive integer", code: 64)
        expectError(tta(["compare", "--batch-size", "0"]), "invalid value '0' for '--batch-size': expected a positive integer", code: 64)
        expectError(tta(["compare", "--lr", "-1"]), "invalid value '-1' for '--lr': expected a non-negative number", code: 64)
        expectError(tta(["compare", "--bn-alpha", "2"]), "invalid value '2' for '--bn-alpha': expected a number in [0, 1]", code: 64)
        expectError(tta(["compare", "--beta1", "1"]), "invalid value '1' for '--beta1': expected a number in [0, 1)", code: 64)
        expectError(tta(["compare", "--severity", "5,6"]), "invalid value '5,6' for '--severity': expected a comma-separated list of integers in 1...5", code: 64)
        expectError(tta(["compare", "--nesterov", "yes"]), "invalid value 'yes' for '--nesterov': expected true or false", code: 64)
        expectError(tta(["compare", "--seed", "-3"]), "invalid value '-3' for '--seed': expected a non-negative integer", code: 64)
        expectError(tta(["compare", "--setting", "continuous"]),
                    "invalid value 'continuous' for '--setting': expected one of continual, reset_each_shift, gradual, mixed_domains, correlated (did you mean 'continual'?)", code: 64)
        expectError(tta(["compare", "--methods", "tent,cota"]),
                    "invalid value 'cota' for '--methods': expected a comma-separated list of \(MethodRegistry.names.joined(separator: ", ")) (did you mean 'cotta'?)", code: 64)
        expectError(tta(["compare", "--methods", "tent,tent"]), "'--methods' lists 'tent' twice", code: 64)
        expectError(tta(["compare", "--methods", "tent,"]), "invalid value 'tent,' for '--methods': expected a comma-separated list of \(MethodRegistry.names.joined(separator: ", "))", code: 64)
        expectError(tta(["compare", "--model", "resnet51"]),
                    "invalid value 'resnet51' for '--model': expected \(ModelZoo.modelNamesHelp)", code: 64)
        // A valid name whose model would not fit in memory is refused before anything is allocated
        // (it used to trap building the model).
        expectError(tta(["predict", "--model", "wideresnet-28-100000", "--weights", "w", "--input", "i", "--output", "o"]),
                    "invalid value 'wideresnet-28-100000' for '--model': expected a model of at most 4294967296 parameters (wideresnet-28-10 has 36479194)", code: 64)
        expectError(tta(["compare", "--model", "wrn-10-9223372036854775807"]),
                    "invalid value 'wrn-10-9223372036854775807' for '--model': expected a model of at most 4294967296 parameters (wideresnet-28-10 has 36479194)", code: 64)
        expectError(tta(["compare", "--lr"]), "option '--lr' needs a value: a non-negative number", code: 64)
        expectError(tta(["compare", "--lr", "--steps", "2"]), "option '--lr' needs a value: a non-negative number", code: 64)
    }

    @Test func commandsAndArguments() {
        expectError(tta(["comapre"]), "unknown command 'comapre'; did you mean 'compare'?", code: 64)
        expectError(tta(["train"]), "unknown command 'train'; commands: compare, run, list, inspect, predict", code: 64)
        expectError(tta(["--lr", "1"]), "expected a command before '--lr': compare, run, list, inspect, predict; see 'tta --help'", code: 64)
        expectError(tta(["compare", "extra"]), "unexpected argument 'extra' for 'tta compare'; see 'tta compare --help'", code: 64)
        expectError(tta(["inspect"]), "'tta inspect' needs a file to inspect; see 'tta inspect --help'", code: 64)
        expectError(tta(["inspect", "/nonexistent/w.safetensors"]), "inspect: no such file: /nonexistent/w.safetensors", code: 1)
        expectError(tta(["predict", "--input", "x.npy"]), "'tta predict' needs --weights (the model's .safetensors weights)", code: 64)
        expectError(tta(["help", "rnu"]), "unknown command 'rnu'; did you mean 'run'?", code: 64)
    }

    @Test func incompatibleAndMissingOptions() throws {
        expectError(tta(["compare", "--dirichlet", "0.1"]), "--dirichlet applies only to --setting correlated (the setting is continual)", code: 64)
        // The Dirichlet order seeds numpy's legacy generator, as the reference does; np.random.seed takes 32 bits.
        expectError(tta(["compare", "--setting", "correlated", "--dirichlet", "0.1", "--seed", "4294967296"]),
                    "--seed: the Dirichlet ordering seeds numpy's generator as the reference does (np.random.seed), "
                        + "which takes seeds up to 2^32 − 1 = 4294967295; got 4294967296", code: 64)
        expectError(tta(["compare", "--dataset", "cifar10-c"]), "--dataset cifar10-c needs --data-dir (the CIFAR-10-C folder or its parent)", code: 64)
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        expectError(tta(["compare", "--dataset", "cifar100-c", "--data-dir", tiny.root]),
                    "--dataset cifar100-c needs --weights (a .safetensors state dict; only fmnist-c has an embedded model)", code: 64)
        expectError(tta(["compare", "--data-dir", tiny.folder.path("elsewhere"), "--weights", tiny.weights]),
                    "--dataset is needed: cannot tell the benchmark from --data-dir \(tiny.folder.path("elsewhere")) (expected a CIFAR-10-C, CIFAR-100-C, ImageNet-C, Tiny-ImageNet-C or FMNIST-C folder or its parent)", code: 64)
        expectError(tta(["compare"] + tiny.dataOptions + ["--samples-per-domain", "100"]),
                    "--samples-per-domain: 100 exceeds the 8 samples per severity of \(tiny.dataFolder.path)", code: 64)
        expectError(tta(["compare"] + tiny.dataOptions(with: ["--corruptions", "gausian_noise"])),
                    "invalid value 'gausian_noise' for '--corruptions': expected a corruption name (did you mean 'gaussian_noise'?)", code: 64)
        expectError(tta(["compare"] + tiny.dataOptions + ["--steps", "0"]), "invalid value '0' for '--steps': expected a positive integer", code: 64)
    }

    @Test func missingAndUnusableFiles() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let missing = tiny.folder.path("missing.safetensors")
        expectError(tta(["compare", "--dataset", "cifar10-c", "--data-dir", tiny.root, "--weights", missing]), "--weights: no such file: \(missing)", code: 1)
        let noDir = tiny.folder.path("nowhere")
        expectError(tta(["compare", "--dataset", "cifar10-c", "--data-dir", noDir, "--weights", tiny.weights]),
                    "\(noDir): directory does not exist; expected a CIFAR-10-C-layout folder (labels.npy and <corruption>.npy files) or its parent", code: 1)
        expectError(tta(["compare"] + tiny.dataOptions(with: ["--corruptions", "snow"])),
                    "\(tiny.dataFolder.appendingPathComponent("snow.npy").path): missing corruption file; the folder has: gaussian_noise, shot_noise, fog", code: 1)
        let out = tiny.folder.path("no/such/dir/r.json")
        expectError(tta(["compare"] + tiny.dataOptions + ["--output", out]),
                    "cannot write \(out): the folder \(tiny.folder.path("no/such/dir")) does not exist", code: 1)
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "eata", "--source-data", tiny.folder.path("src")]),
                    "--source-data: no such file: \(tiny.folder.path("src"))", code: 1)
        // A method that needs source data: a usage error without --source-data; unreadable or mismatching
        // source data is refused with the file and what was expected, before any work.
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "tent,eata"]),
                    "method 'eata' needs labelled source data: give --source-data, or use eta (EATA without its Fisher term)", code: 64)
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "rmt"]), "method 'rmt' needs labelled source data: give --source-data", code: 64)
        // Batch size 1: methods that normalise with the test batch's statistics want a sliding window;
        // the refusal names the option and the single-image methods. A window needs batch size 1.
        expectError(tta(["compare"] + tiny.dataOptions(with: ["--methods", "norm_alpha,roid", "--batch-size", "1"])),
                    "--batch-size 1: roid normalises with the statistics of the test batch, which one image does not give (the reference has the same limit). "
                    + "Give --window-length N to adapt on a sliding window of the last N images (the reference's TEST.WINDOW_LENGTH, e.g. 64), "
                    + "or use a method made for single images: norm_alpha, norm_ema, rotta, unmix_tns, <method>+unmix_tns but lame+unmix_tns and roid+unmix_tns; --window-length 1 runs roid on single images anyway", code: 64)
        expectError(tta(["compare"] + tiny.dataOptions(with: ["--methods", "lame+unmix_tns", "--batch-size", "1"])),
                    "--batch-size 1: lame+unmix_tns relates the images of each batch through their affinity, which one image does not have. "
                    + "Give --window-length N to adapt on a sliding window of the last N images (the reference's TEST.WINDOW_LENGTH, e.g. 64), "
                    + "or use a method made for single images: norm_alpha, norm_ema, rotta, unmix_tns, <method>+unmix_tns but lame+unmix_tns and roid+unmix_tns; "
                    + "--window-length 1 runs lame+unmix_tns on single images anyway", code: 64)
        expectError(tta(["compare"] + tiny.dataOptions(with: ["--methods", "roid+unmix_tns", "--batch-size", "1"])),
                    "--batch-size 1: roid+unmix_tns weights each image against the others of its batch, which one image does not have. "
                    + "Give --window-length N to adapt on a sliding window of the last N images (the reference's TEST.WINDOW_LENGTH, e.g. 64), "
                    + "or use a method made for single images: norm_alpha, norm_ema, rotta, unmix_tns, <method>+unmix_tns but lame+unmix_tns and roid+unmix_tns; "
                    + "--window-length 1 runs roid+unmix_tns on single images anyway", code: 64)
        // predict has no sliding window: the same methods are refused at --batch-size 1, before any file is read
        // (they used to run, ROID skipping every batch without a word).
        expectError(tta(["predict", "--weights", "w", "--input", "i", "--output", "o", "--method", "roid", "--batch-size", "1"]),
                    "--batch-size 1: roid normalises with the statistics of the test batch, which one image does not give (the reference has the same limit). "
                    + "Give a larger --batch-size ('tta run --window-length N' adapts on a sliding window of single images), "
                    + "or use a method made for single images: norm_alpha, norm_ema, rotta, unmix_tns, <method>+unmix_tns but lame+unmix_tns and roid+unmix_tns", code: 64)
        #expect(tta(["predict", "--weights", "w", "--input", "i", "--output", "o", "--method", "unmix_tns", "--batch-size", "1"]).err
                    .contains("--input: no such file"))
        expectError(tta(["compare"] + tiny.dataOptions(with: ["--methods", "tent", "--batch-size", "4", "--window-length", "8"])),
                    "--window-length: a sliding window of 8 images is for single-image streams (batch size 1); the batch size is 4", code: 64)
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "eata", "--source-data", tiny.dataFolder.path]),
                    "\(tiny.dataFolder.path): expected both images.npy and labels.npy in the folder, found only labels.npy", code: 1)
    }

    @Test func weightsThatDoNotMatch() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        // A named model whose state dict differs: the error names the key.
        var model = TinyBenchmark.makeModel(channels: 3)
        let dropped = tiny.folder.path("dropped.safetensors")
        try SafeTensorsFile.write(model.store.stateDict().filter { $0.name != "fc.bias" && !$0.name.hasSuffix("num_batches_tracked") },
                                  to: URL(fileURLWithPath: dropped))
        expectError(tta(["compare"] + tiny.dataOptions(with: ["--weights", dropped, "--model", "wideresnet-10-1"])),
                    "cannot load \(dropped) as wideresnet-10-1: tensor 'fc.bias': missing from the file (the model expects shape [10])", code: 1)
        let r = tta(["compare"] + tiny.dataOptions + ["--model", "wideresnet-10-2"])
        #expect(r.code == 1)
        #expect(r.err.hasPrefix("tta: error: cannot load \(tiny.weights) as wideresnet-10-2: state dict does not match the model"))
        #expect(r.err.contains("'block1.layer.0.conv1.weight' expected shape [32, 16, 3, 3], found [16, 16, 3, 3]"))
        #expect(r.err.split(separator: "\n").count == 1)
        // auto: weights for 1-channel images on 3-channel data.
        model = TinyBenchmark.makeModel(channels: 1)
        let grey = tiny.folder.path("grey.safetensors")
        try TinyBenchmark.save(model, to: grey)
        expectError(tta(["compare"] + tiny.dataOptions(with: ["--weights", grey])),
                    "\(grey): the weights take 1-channel images (conv1.weight) but the data has 3 channels", code: 1)
        // Not a safetensors file at all.
        let junk = tiny.folder.path("junk.safetensors")
        try Data("not a model".utf8).write(to: URL(fileURLWithPath: junk))
        let j = tta(["compare"] + tiny.dataOptions(with: ["--weights", junk]))
        #expect(j.code == 1 && j.err.hasPrefix("tta: error: --weights \(junk): not a safetensors file (header length ") && j.err.split(separator: "\n").count == 1)
    }
}
