import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

/// A named recipe of one of the papers: the task, the model and the values the paper or its code
/// used; everything it leaves unset comes from the defaults, and command-line settings override it.
public struct RunPreset: Sendable {
    public var name: String
    public var summary: String
    /// Where the values come from (paper table and reference code file).
    public var source: String
    public var task: String
    public var model: String
    public var settings: RunSettings
    /// Lengths the recipe was defined at (nil: its task's own length).
    public var lengths: [Int]?
    /// Other tasks the recipe runs on with `--task`: the stand-ins for its task's data (MNIST for
    /// CIFAR-10) and the same task at another size (Path-X for Pathfinder).
    public var otherTasks: [String] = []
    /// Why the task cannot run here yet and what prepares its data (nil: ready).
    public var missingData: String?

    /// Looks a preset up by name; a usage error lists the presets.
    public static func named(_ name: String) throws -> RunPreset {
        guard let p = all.first(where: { $0.name == name.lowercased() }) else {
            throw UserError(what: "--preset", value: name, why: "unknown preset", remedy: "`longmixer presets` lists them")
        }
        return p
    }

    public static var all: [RunPreset] { paramixer + permuteFormerLRA + paramixerBaselines + languageModel }

    /// Why a preset cannot run: its task does not exist yet (nil when it does; a task whose data are
    /// not prepared stops when training starts, naming `longmixer data prepare`).
    static func missingTask(_ task: String) -> String? {
        TaskRegistry.names.contains(task) ? nil : "the \(task) task is not available yet"
    }

    /// Image tasks a CIFAR-10 recipe also runs on: the stand-ins besides the image task's own Fashion-MNIST.
    static let imageStandIns = ["mnist"]
    /// The easier Pathfinder sets at 32 × 32 (contour lengths 6 and 9).
    static let pathfinderVariants = ["pathfinder-easy", "pathfinder-intermediate"]

    // MARK: Paramixer, supplement Table 1 (reference code `wiedersehne/Paramixer`)

    static func paramixerSettings(d: Int, h: Int, blocks: Int, positions: PositionEncoding, pooling: Pooling, dropout1: Float,
                                  dropout2: Float, batch: Int, lr: Float, epochs: Int, clip: Bool) -> RunSettings {
        var s = RunSettings()
        s.modelOptions = ModelOptions(dimensions: d, layers: blocks, hidden: h, dropout1: dropout1, dropout2: dropout2,
                                      linkProtocol: .chord, factorRule: .floor, residual: .everyFactor, pooling: pooling,
                                      positions: positions)
        s.optimizer = .adam
        s.learningRate = lr
        s.schedule = .constant
        s.warmupSteps = 0
        s.batchSize = batch
        s.epochs = epochs
        s.clipNorm = clip ? 1 : 0
        s.seed = 42
        return s
    }

    static let paramixer: [RunPreset] = {
        var synthetic = RunSettings()
        synthetic.trainSize = 100_000; synthetic.validationSize = 1_000; synthetic.testSize = 1_000
        let adding = paramixerSettings(d: 32, h: 32, blocks: 1, positions: .none, pooling: .flatten, dropout1: 0, dropout2: 0,
                                       batch: 40, lr: 1e-3, epochs: 50, clip: true).overridden(by: synthetic)
        let order = paramixerSettings(d: 32, h: 32, blocks: 1, positions: .learned, pooling: .flatten, dropout1: 0, dropout2: 0,
                                      batch: 40, lr: 1e-3, epochs: 30, clip: true).overridden(by: synthetic)
        let table = "Paramixer supplement Table 1; `Synthetic-data-tasks/synthetic_training_config.py`"
        let lra = "Paramixer supplement Table 1; `LRA/lra_training_config.py`"
        func needs(_ task: String) -> String? { RunPreset.missingTask(task) }
        // The reference's 4096 characters + CLS; the text task lays them out as CLS, 4095 bytes, SEP.
        var textLength = RunSettings(), longLength = RunSettings(), longLength32K = RunSettings()
        textLength.length = 4097
        longLength.length = 16_385
        // Table 2 also reports long documents at N = 32k; no configuration was released for it, so the
        // 16K recipe of supplement Table 1 runs at 32768 + CLS.
        longLength32K.length = 32_769
        let longdoc = paramixerSettings(d: 100, h: 128, blocks: 1, positions: .none, pooling: .cls, dropout1: 0.2, dropout2: 0,
                                        batch: 16, lr: 1e-4, epochs: 50, clip: true)
        return [
            RunPreset(name: "paramixer-adding", summary: "Adding, D=H=32, 1 block, CHORD, FLATTEN, Adam 1e-3, batch 40, clip 1, 50 epochs of 100k",
                      source: table, task: "adding", model: "paramixer", settings: adding, lengths: (7...15).map { 1 << $0 }),
            RunPreset(name: "paramixer-order", summary: "Temporal Order, D=H=32, 1 block, CHORD, APC, FLATTEN, Adam 1e-3, batch 40, 30 epochs",
                      source: table, task: "order", model: "paramixer", settings: order, lengths: (7...15).map { 1 << $0 }),
            RunPreset(name: "paramixer-listops", summary: "LRA ListOps, N 1999, D 128, H 32, CHORD, APC, FLATTEN, batch 48, lr 1e-3, 150 epochs",
                      source: lra, task: "listops", model: "paramixer",
                      settings: paramixerSettings(d: 128, h: 32, blocks: 1, positions: .learned, pooling: .flatten, dropout1: 0, dropout2: 0,
                                                  batch: 48, lr: 1e-3, epochs: 150, clip: false), missingData: needs("listops")),
            RunPreset(name: "paramixer-image", summary: "LRA Image (CIFAR-10 gray), N 1024, D=H=32, APC, FLATTEN, dropout 0.2/0.8, batch 64, 150 epochs",
                      source: lra + ", `cifar10_training.py`", task: "image", model: "paramixer",
                      settings: paramixerSettings(d: 32, h: 32, blocks: 1, positions: .learned, pooling: .flatten, dropout1: 0.2, dropout2: 0.8,
                                                  batch: 64, lr: 1e-3, epochs: 150, clip: false),
                      otherTasks: imageStandIns, missingData: needs("image")),
            // The paper reports no Path-X; `--task pathx` runs this recipe on the 128 × 128 images.
            RunPreset(name: "paramixer-pathfinder", summary: "LRA Pathfinder 32, N 1024, D 64, H 32, APC, FLATTEN, batch 64, 100 epochs",
                      source: lra, task: "pathfinder", model: "paramixer",
                      settings: paramixerSettings(d: 64, h: 32, blocks: 1, positions: .learned, pooling: .flatten, dropout1: 0, dropout2: 0,
                                                  batch: 64, lr: 1e-3, epochs: 100, clip: false),
                      otherTasks: pathfinderVariants + ["pathx"], missingData: needs("pathfinder")),
            RunPreset(name: "paramixer-text", summary: "LRA Text (IMDB bytes), N 4096 + CLS, D 32, H 128, 3 blocks, CLS, dropout 0.4, batch 32, lr 1e-4",
                      source: lra, task: "text", model: "paramixer",
                      settings: paramixerSettings(d: 32, h: 128, blocks: 3, positions: .none, pooling: .cls, dropout1: 0.4, dropout2: 0,
                                                  batch: 32, lr: 1e-4, epochs: 200, clip: false).overridden(by: textLength), missingData: needs("text")),
            RunPreset(name: "paramixer-longdoc", summary: "Long documents, N 16384 + CLS, D 100, H 128, CLS, dropout 0.2, batch 16, lr 1e-4, 50 epochs",
                      source: "Paramixer supplement Table 1; `long-document-clf`", task: "longdoc", model: "paramixer",
                      settings: longdoc.overridden(by: longLength), missingData: needs("longdoc")),
            RunPreset(name: "paramixer-longdoc-32k", summary: "Long documents, N 32768 + CLS, D 100, H 128, CLS, dropout 0.2, batch 16, lr 1e-4, 50 epochs",
                      source: "Paramixer Table 2 (N 32k; no released configuration: supplement Table 1's long-document values)",
                      task: "longdoc-32k", model: "paramixer", settings: longdoc.overridden(by: longLength32K), missingData: needs("longdoc-32k")),
            RunPreset(name: "paramixer-genome", summary: "Genomes, N 16384, D 32, H 128, APC, FLATTEN, dropout 0.2/0.8, batch 16, lr 1e-4, 200 epochs",
                      source: "Paramixer supplement Table 1; `Genome-clf`", task: "genome", model: "paramixer",
                      settings: paramixerSettings(d: 32, h: 128, blocks: 1, positions: .learned, pooling: .flatten, dropout1: 0.2, dropout2: 0.8,
                                                  batch: 16, lr: 1e-4, epochs: 200, clip: true), missingData: needs("genome")),
        ]
    }()

    // MARK: PermuteFormer, LRA (reference code `cpcp1998/PermuteFormer`, `long_range_arena`)

    /// An encoder recipe: Adam without weight decay; `clip` 0 turns clipping off.
    static func encoderSettings(_ options: ModelOptions, lr: Float, schedule: ScheduleKind, warmup: Int, batch: Int, epochs: Int,
                                clip: Float) -> RunSettings {
        var s = RunSettings()
        s.modelOptions = options
        s.optimizer = .adam
        s.learningRate = lr
        s.schedule = schedule
        s.warmupSteps = warmup
        s.weightDecay = 0
        s.batchSize = batch
        s.epochs = epochs
        s.clipNorm = clip
        return s
    }

    static let permuteFormerLRA: [RunPreset] = {
        // (task, layers, D, heads, FFN, dropout, batch, lr, warm-up, epochs) of the LRA configs and task scripts.
        let tasks: [(String, Int, Int, Int, Int, Float, Int, Float, Int, Int)] = [
            ("listops", 6, 512, 8, 2048, 0.1, 32, 1e-4, 1000, 5), ("text", 6, 512, 8, 2048, 0.1, 16, 1e-5, 4000, 10),
            ("retrieval", 4, 128, 4, 512, 0.1, 32, 2e-4, 1000, 10), ("image", 3, 64, 4, 128, 0.3, 256, 1e-2, 200, 50),
            ("pathfinder", 4, 128, 8, 128, 0.1, 256, 5e-4, 4000, 80),
        ]
        var out: [RunPreset] = []
        for (task, layers, d, heads, ffn, dropout, batch, lr, warmup, epochs) in tasks {
            let image = task == "image" || task == "pathfinder"
            var models = ["transformer", "performer", "permuteformer", "rope", "orthogonal"]
            if image { models.append("permuteformer-2d") }
            for model in models {
                let s = encoderSettings(ModelOptions(dimensions: d, layers: layers, heads: heads, feedForward: ffn, dropout: dropout, pooling: .cls),
                                        lr: lr, schedule: .inverseSqrt, warmup: warmup, batch: batch, epochs: epochs, clip: 0)
                out.append(RunPreset(
                    name: "lra-\(task)-\(model)",
                    summary: "LRA \(task): \(model), \(layers) layers, D \(d), \(heads) heads, FFN \(ffn), Adam \(lr) inverse-sqrt (\(warmup) warm-up), batch \(batch), \(epochs) epochs",
                    source: "PermuteFormer §4 / LRA appendix dimensions; `long_range_arena/configs`, task scripts",
                    task: task, model: model, settings: s, lengths: nil,
                    otherTasks: task == "image" ? imageStandIns : task == "pathfinder" ? pathfinderVariants : [],
                    missingData: missingTask(task)))
            }
        }
        // Path-X: the LRA paper gives no dimensions of its own; the released `pathfinder128` config
        // (batch 64, 200 epochs, lr 1e-3 with a one-epoch warm-up and cosine decay, D 32, 2 heads,
        // 1 layer, MLP 32, mean pooling, clipping at 1; positions each mixer's own, as in the other
        // LRA presets). One epoch is 160,000 images, 2,500 steps of 64.
        for model in ["transformer", "performer", "permuteformer", "rope", "orthogonal", "permuteformer-2d"] {
            let s = encoderSettings(ModelOptions(dimensions: 32, layers: 1, heads: 2, feedForward: 32, dropout: 0, pooling: .mean),
                                    lr: 1e-3, schedule: .cosine, warmup: 2_500, batch: 64, epochs: 200, clip: 1)
            out.append(RunPreset(
                name: "lra-pathx-\(model)",
                summary: "LRA Path-X (128 × 128): \(model), 1 layer, D 32, 2 heads, FFN 32, mean pooling, Adam 1e-3 cosine (2,500 warm-up), batch 64, clip 1, 200 epochs",
                source: "LRA `pathfinder128` config (`long_range_arena/lra_benchmarks/image/configs`); not in the PermuteFormer paper",
                task: "pathx", model: model, settings: s, lengths: nil, missingData: missingTask("pathx")))
        }
        return out
    }()

    // MARK: The Paramixer paper's attention baselines on long documents and genomes (Tables 2 and 3)

    static let paramixerBaselines: [RunPreset] = {
        // `long-document-clf/xformers.py`, `Genome-clf`: depth 1, 1 head, FFN = D, dropout 0.2; each
        // mixer's own positions; the task's Paramixer recipe for optimiser, batch, lr and epochs.
        let tasks: [(task: String, d: Int, length: Int?, pooling: Pooling, epochs: Int, table: String)] = [
            ("longdoc", 100, 16_385, .cls, 50, "Table 2, N 16k"), ("longdoc-32k", 100, 32_769, .cls, 50, "Table 2, N 32k"),
            ("genome", 32, nil, .flatten, 200, "Table 3"),
        ]
        var out: [RunPreset] = []
        for (task, d, length, pooling, epochs, table) in tasks {
            for model in ["transformer", "performer", "permuteformer"] {
                var s = encoderSettings(ModelOptions(dimensions: d, layers: 1, heads: 1, feedForward: d, dropout: 0.2, pooling: pooling),
                                        lr: 1e-4, schedule: .constant, warmup: 0, batch: 16, epochs: epochs, clip: 1)
                s.length = length
                s.seed = 42
                out.append(RunPreset(
                    name: "\(task)-\(model)",
                    summary: "\(task): \(model) as the Paramixer paper's baseline, 1 layer, D \(d), 1 head, FFN \(d), dropout 0.2, \(pooling.rawValue) pooling, Adam 1e-4, batch 16, clip 1, \(epochs) epochs",
                    source: "Paramixer \(table) baselines; `long-document-clf/xformers.py`, `Genome-clf` (PermuteFormer was not in the paper's comparison)",
                    task: task, model: model, settings: s, lengths: nil, missingData: missingTask(task)))
            }
        }
        return out
    }()

    // MARK: PermuteFormer, language modelling (fairseq transformer_lm)

    static let languageModel: [RunPreset] = {
        var out: [RunPreset] = []
        for model in ["permuteformer", "performer", "permuteformer-no-decay", "decay-only", "transformer"] {
            var s = RunSettings()
            s.size = .wikitext
            s.length = 512
            s.optimizer = .adam
            s.learningRate = 5e-4
            s.schedule = .inverseSqrt
            s.warmupSteps = 4000
            s.weightDecay = 0.01
            s.clipNorm = 0
            s.batchSize = 16
            s.steps = 50_000
            out.append(RunPreset(
                name: "lm-wikitext-\(model)",
                summary: "WikiText-103 LM: \(model), 6 layers, D 512, 8 heads, N 512, Adam (0.9, 0.98) 5e-4 inverse-sqrt, 50k updates",
                source: "PermuteFormer §4.3; `language_model/run_permute.sh` (fairseq transformer_lm)",
                task: "lm", model: model, settings: s, lengths: nil, missingData: nil))
        }
        return out
    }()
}
