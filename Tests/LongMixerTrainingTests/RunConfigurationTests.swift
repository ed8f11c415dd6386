import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels

/// The one configuration merge: defaults ← preset ← command line, `--scale`, and refusal of every
/// setting that does not apply, before anything is built.
@Suite("Run configuration")
struct RunConfigurationTests {
    func settings(_ body: (inout RunSettings) -> Void) -> RunSettings {
        var s = RunSettings()
        body(&s)
        return s
    }

    func expectRefused(_ s: RunSettings, preset: String? = nil, scale: Double? = nil, naming what: String,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try RunConfiguration.resolve(s, preset: preset, scale: scale)
            Issue.record("accepted; expected a refusal naming \(what)", sourceLocation: sourceLocation)
        } catch let e as UserError {
            #expect(e.what == what, "refused for \(e.what), expected \(what): \(e)", sourceLocation: sourceLocation)
            #expect(!e.description.contains("\n"), sourceLocation: sourceLocation)
        } catch {
            Issue.record("not a UserError: \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func defaultsForTheMainJob() throws {
        let c = try RunConfiguration.resolve(settings { $0.task = "adding" })
        #expect(c.task == "adding" && c.model == "paramixer" && c.length == 1024 && c.seed == 42)
        #expect(c.optimizer == .adam && c.learningRate == 2e-3 && c.schedule == .cosine && c.training.steps == 1500)
        #expect(c.training.batchSize == 40 && c.training.clipNorm == 1 && c.data.splitSizes == SplitSizes())
        #expect(c.preset == nil && c.scale == nil)
        // Temporal Order's defaults: block-input residual and learned positions for Paramixer.
        let order = try RunConfiguration.resolve(settings { $0.task = "order" })
        #expect(order.modelOptions.residual == .blockInput && order.modelOptions.positions == .learned)
        // The LM's defaults.
        let lm = try RunConfiguration.resolve(settings { $0.task = "lm"; $0.corpus = "c.txt" })
        #expect(lm.model == "permuteformer" && lm.optimizer == .adamw && lm.learningRate == 5e-4 && lm.weightDecay == 0.01)
        #expect(lm.size == .small && lm.modelOptions.dimensions == 256 && lm.training.batchSize == 16 && lm.training.steps == 1000)
    }

    @Test func presetOverridesDefaultsAndFlagsOverridePreset() throws {
        let p = try RunConfiguration.resolve(RunSettings(), preset: "paramixer-order")
        #expect(p.task == "order" && p.preset == "paramixer-order")
        #expect(p.schedule == .constant && p.learningRate == 1e-3 && p.training.epochs == 30 && p.training.steps == nil)
        #expect(p.modelOptions.residual == .everyFactor && p.modelOptions.factorRule == .floor && p.modelOptions.positions == .learned)
        let f = try RunConfiguration.resolve(settings { $0.learningRate = 5e-4; $0.steps = 10; $0.modelOptions.residual = .blockInput },
                                             preset: "paramixer-order")
        #expect(f.learningRate == 5e-4 && f.training.steps == 10 && f.modelOptions.residual == .blockInput)
        #expect(f.schedule == .constant && f.training.batchSize == 40)
        // LM size is the base; explicit width wins.
        let lm = try RunConfiguration.resolve(settings { $0.task = "lm"; $0.size = .tiny; $0.modelOptions.dimensions = 96 })
        #expect(lm.modelOptions.dimensions == 96 && lm.modelOptions.layers == 2 && lm.modelOptions.heads == 2)
    }

    @Test func scaleShrinksAndIsRecorded() throws {
        let c = try RunConfiguration.resolve(RunSettings(), preset: "paramixer-adding", scale: 0.25)
        #expect(c.preset == "paramixer-adding" && c.scale == 0.25)
        #expect(c.length == 256 && c.modelOptions.dimensions == 8 && c.modelOptions.hidden == 8 && c.modelOptions.layers == 1)
        #expect(c.training.epochs == 13 && c.data.splitSizes == SplitSizes(train: 25_000, validation: 250, test: 250))
        // The command line is taken as given: only the recipe shrinks.
        let listops = try RunConfiguration.resolve(settings { $0.steps = 300; $0.trainSize = 5_000; $0.length = 1999; $0.modelOptions.heads = 4 },
                                                   preset: "lra-listops-permuteformer", scale: 0.125)
        #expect(listops.training.steps == 300 && listops.data.trainLimit == 5_000 && listops.modelOptions.heads == 4)
        #expect(listops.modelOptions.dimensions == 64 && listops.modelOptions.feedForward == 256 && listops.modelOptions.layers == 1)
        #expect(listops.warmupSteps == 125 && listops.length == 1999)
        let lm = try RunConfiguration.resolve(settings { $0.task = "lm"; $0.corpus = "c.txt"; $0.size = .tiny; $0.modelOptions.layers = 3 },
                                              scale: 0.5)
        #expect(lm.size == .tiny && lm.modelOptions.layers == 3)
        // A run shorter than the recipe's warm-up is refused before any data are read, naming where the warm-up came from.
        let short = settings { $0.steps = 150 }
        expectRefused(short, preset: "lra-text-permuteformer", scale: 0.25, naming: "--warmup-steps")
        let error = #expect(throws: (any Error).self) { try RunConfiguration.resolve(short, preset: "lra-text-permuteformer", scale: 0.25) }
        #expect(error.map { "\($0)".contains("preset lra-text-permuteformer's warm-up after --scale 0.25") } == true, "\(String(describing: error))")
        #expect(try RunConfiguration.resolve(settings { $0.steps = 150; $0.warmupSteps = 30 }, preset: "lra-text-permuteformer", scale: 0.25).warmupSteps == 30)
        expectRefused(RunSettings(), preset: "paramixer-adding", scale: 1.5, naming: "--scale")
        expectRefused(RunSettings(), preset: "paramixer-adding", scale: 0, naming: "--scale")
    }

    @Test func everyModelResolvesForItsTasks() throws {
        for name in ["paramixer", "transformer", "performer", "favor", "permuteformer", "rope", "orthogonal"] {
            #expect(try RunConfiguration.resolve(settings { $0.task = "order"; $0.model = name }).model == name)
        }
        for name in ["transformer", "performer", "permuteformer", "permuteformer-no-decay", "decay-only"] {
            #expect(try RunConfiguration.resolve(settings { $0.task = "lm"; $0.model = name }).model == name)
        }
    }

    @Test func inapplicableSettingsAreRefused() {
        expectRefused(settings { $0.task = "adding"; $0.modelOptions.heads = 4 }, naming: "--heads")
        expectRefused(settings { $0.task = "adding"; $0.modelOptions.dropout = 0.1 }, naming: "--dropout")
        expectRefused(settings { $0.task = "adding"; $0.modelOptions.feedForward = 64 }, naming: "--feed-forward")
        expectRefused(settings { $0.task = "order"; $0.model = "performer"; $0.modelOptions.hidden = 8 }, naming: "--hidden")
        expectRefused(settings { $0.task = "order"; $0.model = "performer"; $0.modelOptions.linkProtocol = .cdil }, naming: "--protocol")
        expectRefused(settings { $0.task = "order"; $0.model = "performer"; $0.modelOptions.residual = .blockInput }, naming: "--residual")
        expectRefused(settings { $0.task = "order"; $0.model = "rope"; $0.modelOptions.dropout1 = 0.1 }, naming: "--dropout1")
        expectRefused(settings { $0.task = "lm"; $0.modelOptions.residual = .blockInput }, naming: "--residual")
        expectRefused(settings { $0.task = "lm"; $0.headLearningRateScale = 2 }, naming: "--head-lr-scale")
        expectRefused(settings { $0.task = "lm"; $0.modelOptions.pooling = .cls }, naming: "--pooling")
        expectRefused(settings { $0.task = "lm"; $0.targetAccuracy = 0.5 }, naming: "--target-accuracy")
        expectRefused(settings { $0.task = "lm"; $0.trainSize = 100 }, naming: "--train-size")
        expectRefused(settings { $0.task = "adding"; $0.corpus = "c.txt" }, naming: "--corpus")
        expectRefused(settings { $0.task = "adding"; $0.size = .tiny }, naming: "--size")
        expectRefused(settings { $0.task = "adding"; $0.steps = 5; $0.epochs = 2 }, naming: "--epochs")
        expectRefused(settings { $0.task = "adding"; $0.optimizer = .sgd; $0.headLearningRateScale = 2 }, naming: "--head-lr-scale")
        expectRefused(settings { $0.task = "adding"; $0.schedule = .constant; $0.warmupSteps = 10 }, naming: "--warmup-steps")
        expectRefused(settings { $0.task = "adding"; $0.modelOptions.pooling = .mean }, naming: "--pooling")
        expectRefused(settings { $0.task = "adding"; $0.modelOptions.positions = .sinusoidal }, naming: "--positions")
    }

    @Test func modelsThatCannotServeATaskAreRefused() {
        expectRefused(settings { $0.task = "order"; $0.model = "decay-only" }, naming: "--model")        // causal mixer, classification
        expectRefused(settings { $0.task = "order"; $0.model = "permuteformer-2d" }, naming: "--model")  // 2D mixer, no grid
        expectRefused(settings { $0.task = "lm"; $0.model = "favor" }, naming: "--model")                // no causal form
        expectRefused(settings { $0.task = "lm"; $0.model = "paramixer" }, naming: "--model")
        expectRefused(settings { $0.task = "adding"; $0.model = "bert" }, naming: "--model")
        expectRefused(settings { $0.task = "no-such-task" }, naming: "--task")
        expectRefused(RunSettings(), naming: "--task")
    }

    @Test func presetMismatchesAreRefused() {
        expectRefused(RunSettings(), preset: "bert-base", naming: "--preset")
        expectRefused(settings { $0.task = "order" }, preset: "paramixer-adding", naming: "--task")
        expectRefused(settings { $0.model = "performer" }, preset: "paramixer-adding", naming: "--model")
        expectRefused(settings { $0.length = 1000 }, preset: "paramixer-adding", naming: "--length")
        // A preset whose task exists resolves; missing data stop the run when it starts (`data prepare`).
        #expect(throws: Never.self) { _ = try RunConfiguration.resolve(RunSettings(), preset: "lra-listops-permuteformer") }
        // Image tasks take their grid's N, genomes 16,384 bases after CLS.
        #expect((try? RunConfiguration.resolve(RunSettings(), preset: "lra-pathfinder-permuteformer-2d"))?.length == 1026)
        #expect((try? RunConfiguration.resolve(RunSettings(), preset: "paramixer-image", scale: 0.1))?.length == 1026)
        #expect((try? RunConfiguration.resolve(RunSettings(), preset: "paramixer-genome"))?.length == 16_385)
        #expect((try? RunConfiguration.resolve(RunSettings(), preset: "paramixer-longdoc"))?.length == 16_385)
        // Table 2's 32k: the long-document recipe at 32768 + CLS on its own task.
        let longdoc32K = try? RunConfiguration.resolve(RunSettings(), preset: "paramixer-longdoc-32k")
        #expect(longdoc32K?.length == 32_769 && longdoc32K?.task == "longdoc-32k" && longdoc32K?.model == "paramixer")
        #expect(RunPreset.all.first { $0.name == "paramixer-longdoc-32k" }?.source.contains("Table 2") == true)
    }

    @Test func presetsRunOnTheirStandInsAndVariants() throws {
        // A CIFAR-10 recipe on MNIST, the Pathfinder recipe on Path-X: the task's own N.
        let mnist = try RunConfiguration.resolve(settings { $0.task = "mnist" }, preset: "paramixer-image")
        #expect(mnist.task == "mnist" && mnist.length == 1026 && mnist.preset == "paramixer-image")
        #expect(try RunConfiguration.resolve(settings { $0.task = "MNIST" }, preset: "lra-image-permuteformer-2d").task == "mnist")
        let pathx = try RunConfiguration.resolve(settings { $0.task = "pathx" }, preset: "paramixer-pathfinder", scale: 0.25)
        #expect(pathx.length == 16_386 && pathx.modelOptions.dimensions == 16)
        #expect(try RunConfiguration.resolve(settings { $0.task = "pathfinder-easy" }, preset: "lra-pathfinder-permuteformer").length == 1026)
        expectRefused(settings { $0.task = "text" }, preset: "paramixer-image", naming: "--task")
        expectRefused(settings { $0.task = "pathx" }, preset: "lra-image-transformer", naming: "--task")
        // Path-X's own recipe and the Paramixer paper's baselines on long documents and genomes.
        let pathxRecipe = try RunConfiguration.resolve(RunSettings(), preset: "lra-pathx-permuteformer-2d")
        #expect(pathxRecipe.task == "pathx" && pathxRecipe.modelOptions.pooling == .mean && pathxRecipe.training.batchSize == 64)
        let longdoc = try RunConfiguration.resolve(RunSettings(), preset: "longdoc-32k-permuteformer")
        #expect(longdoc.length == 32_769 && longdoc.modelOptions.dimensions == 100 && longdoc.modelOptions.heads == 1)
        let genome = try RunConfiguration.resolve(RunSettings(), preset: "genome-performer")
        #expect(genome.length == 16_385 && genome.modelOptions.pooling == .flatten && genome.training.epochs == 200)
    }

    @Test func outOfRangeValuesAreRefused() {
        for (value, flag) in [(0, "--batch-size"), (-1, "--steps"), (Int.max, "--length"), (0, "--dimensions")] {
            expectRefused(settings {
                $0.task = "adding"
                switch flag {
                case "--batch-size": $0.batchSize = value
                case "--steps": $0.steps = value
                case "--length": $0.length = value
                default: $0.modelOptions.dimensions = value
                }
            }, naming: flag)
        }
        expectRefused(settings { $0.task = "adding"; $0.learningRate = .nan }, naming: "--learning-rate")
        expectRefused(settings { $0.task = "adding"; $0.clipNorm = -1 }, naming: "--clip-norm")
        expectRefused(settings { $0.task = "adding"; $0.targetAccuracy = 2 }, naming: "--target-accuracy")
    }

    @Test func everyPresetNamesItsSourceAndResolvesOrSaysWhatIsMissing() throws {
        #expect(RunPreset.all.count == 9 + 27 + 6 + 9 + 5)
        for p in RunPreset.all {
            #expect(!p.source.isEmpty && !p.summary.isEmpty)
            if p.missingData == nil {
                let s = p.task == "lm" ? settings { $0.corpus = "c.txt" } : RunSettings()
                #expect(throws: Never.self) { _ = try RunConfiguration.resolve(s, preset: p.name) }
            }
        }
    }

    @Test func configurationRoundTripsThroughJSON() throws {
        let c = try RunConfiguration.resolve(settings { $0.task = "order"; $0.model = "permuteformer"; $0.modelOptions.heads = 4 })
        let decoded = try JSONDecoder().decode(RunConfiguration.self, from: JSONEncoder().encode(c))
        #expect(decoded == c)
    }
}

@Suite("Memory estimate")
struct MemoryEstimateTests {
    func configuration(_ body: (inout RunSettings) -> Void) throws -> RunConfiguration {
        var s = RunSettings()
        body(&s)
        return try RunConfiguration.resolve(s)
    }

    @Test func oversizedRunsAreRefusedBeforeAllocation() throws {
        let available = 24.0 * Double(1 << 30)
        let long = try configuration { $0.task = "adding"; $0.length = 1 << 20 }
        let wide = try configuration { $0.task = "adding"; $0.modelOptions.dimensions = 1 << 16 }
        let batch = try configuration { $0.task = "adding"; $0.batchSize = 1 << 20 }
        for c in [long, wide, batch] {
            #expect(throws: UserError.self) { try MemoryEstimate(c).check(available: available) }
        }
        // The main job fits with room to spare; a micro-batch lowers the estimate.
        let main = try MemoryEstimate(configuration { $0.task = "adding" })
        #expect(main.gibibytes < 2)
        #expect(throws: Never.self) { try main.check(available: available) }
        let whole = try MemoryEstimate(configuration { $0.task = "adding"; $0.length = 65536 })
        let pieces = try MemoryEstimate(configuration { $0.task = "adding"; $0.length = 65536; $0.microBatchSize = 8 })
        #expect(pieces.bytes < whole.bytes)
        do { try whole.check(available: 1e9) } catch let e as UserError {
            #expect(e.remedy?.contains("--micro-batch-size") == true)
        }
    }

    @Test func everyModelHasAFiniteEstimate() throws {
        for model in ["paramixer", "transformer", "performer", "favor", "permuteformer", "rope", "orthogonal"] {
            let e = try MemoryEstimate(configuration { $0.task = "order"; $0.model = model })
            #expect(e.bytes.isFinite && e.parameters > 0 && e.activationsPerSequence > 0, "\(model)")
        }
        let lm = try MemoryEstimate(configuration { $0.task = "lm"; $0.corpus = "c.txt" })
        #expect(lm.bytes.isFinite && lm.parameters > 1e6)
    }

    /// The parameter count behind the estimate (5 floats each: weights, gradients, Adam moments and the
    /// best weights the trainer keeps) is never below the built model's, and not far above it (the
    /// encoders' count includes a position table whether or not the mixer reads one).
    @Test(arguments: ["paramixer", "transformer", "permuteformer", "favor"])
    func parameterCountMatchesTheBuiltModel(model: String) throws {
        let c = try configuration { $0.task = "order"; $0.model = model; $0.length = 256; $0.trainSize = 8; $0.validationSize = 8; $0.testSize = 8 }
        let estimate = try MemoryEstimate(c)
        let parts = try TrainingRun.build(c)
        let built = Double(parts.built.model.parameters().reduce(0) { $0 + $1.value.count })
        #expect(estimate.parameters >= built && estimate.parameters <= 1.6 * built, "\(model): estimated \(estimate.parameters), built \(built)")
    }
}
