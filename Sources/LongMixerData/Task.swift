import Foundation
import LongMixerCore

// Tasks: what a model reads, what it must produce (objective: head, loss, metrics) and where its
// data come from. The trainer and the CLI see only the `Task` protocol. Adding a task: one file
// with a type conforming to `Task` and one line in `TaskRegistry.all`.

/// What a task feeds the model.
public enum TaskInput: Equatable, Sendable {
    /// Token ids [B, N] in 0..<vocabulary; `paddingIndex` is the PAD id where sequences are padded.
    case tokens(vocabulary: Int, paddingIndex: Int?)
    /// Real-valued features [B, N, F].
    case features(Int)
}

/// How a task lays out the N positions of a sample.
public enum InputLayout: Equatable, Sendable {
    /// One sequence of N positions.
    case sequence
    /// An image of W×H pixels in row-major order between `prefix` leading and `suffix` trailing
    /// tokens (e.g. CLS and SEP): N = prefix + W·H + suffix. What the 2D mixers need.
    case grid(width: Int, height: Int, prefix: Int, suffix: Int)
    /// Two documents of N positions each, side by side in one row of 2N (document matching): the
    /// model encodes each with shared weights and classifies the pair.
    case pair
}

extension InputLayout {
    /// N when the layout fixes it (a grid: prefix + W·H + suffix).
    public var fixedLength: Int? {
        if case .grid(let w, let h, let prefix, let suffix) = self { return prefix + w * h + suffix }
        return nil
    }
}

/// The data options of a run that a task reads (the rest of the run configuration is the model's
/// and the trainer's).
public struct TaskDataOptions: Codable, Equatable, Sendable {
    /// N.
    public var length: Int
    public var seed: UInt64
    /// Generated tasks: samples per split.
    public var splitSizes: SplitSizes?
    /// Corpus tasks: a text file or a folder of .txt files.
    public var corpus: String?
    /// Corpus tasks: at most this many evaluation windows per split (nil: all). Prepared-data tasks:
    /// at most this many samples per split.
    public var trainLimit: Int?
    public var validationLimit: Int?
    public var testLimit: Int?
    /// Prepared-data tasks: the data directory (`longmixer data prepare` writes it).
    public var dataDirectory: String?

    public init(length: Int, seed: UInt64, splitSizes: SplitSizes? = nil, corpus: String? = nil, trainLimit: Int? = nil,
                validationLimit: Int? = nil, testLimit: Int? = nil, dataDirectory: String? = nil) {
        self.length = length
        self.seed = seed
        self.splitSizes = splitSizes
        self.corpus = corpus
        self.trainLimit = trainLimit
        self.validationLimit = validationLimit
        self.testLimit = testLimit
        self.dataDirectory = dataDirectory
    }

    /// Where prepared data are read from when no `--data-dir` is given.
    public static let defaultDataDirectory = "data"
}

/// A task's three splits, and one line describing them for the console.
public struct TaskData {
    public var train: any BatchSource
    public var validation: any BatchSource
    public var test: any BatchSource
    public var summary: String?
    /// How the trainer visits the training split: generated i.i.d. samples in order, stored real
    /// data in a seeded permutation per epoch.
    public var trainingOrder: TrainingOrder

    public init(train: any BatchSource, validation: any BatchSource, test: any BatchSource, summary: String? = nil,
                trainingOrder: TrainingOrder = .sequential) {
        self.train = train
        self.validation = validation
        self.test = test
        self.summary = summary
        self.trainingOrder = trainingOrder
    }
}

/// Which data options a task reads; any other one given is refused.
public enum TaskDataOption: String, CaseIterable, Sendable {
    case trainSize = "--train-size", validationSize = "--val-size", testSize = "--test-size", corpus = "--corpus"
    case dataDirectory = "--data-dir"
}

public protocol Task: Sendable {
    /// The registry name (`--task`).
    var name: String { get }
    /// One line for `--help` and listings.
    var summary: String { get }
    var input: TaskInput { get }
    /// How the N positions are laid out (sequence, image grid, document pair).
    var layout: InputLayout { get }
    /// Head, loss and metrics.
    var objective: TaskObjective { get }
    /// Per-position next-token prediction (needs a causal model).
    var isCausal: Bool { get }
    /// The data options this task reads.
    var dataOptions: Set<TaskDataOption> { get }
    /// Shortest sequence the task can be posed at.
    var minimumLength: Int { get }
    /// N when none is given (nil: the run's default); real-data tasks use their reference length, a
    /// grid task its layout's.
    var defaultLength: Int? { get }
    /// The splits. `trainSamples`: samples the run will consume (a corpus task draws that many
    /// random windows; generated tasks ignore it).
    func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData
}

extension Task {
    public var layout: InputLayout { .sequence }
    public var defaultLength: Int? { layout.fixedLength }
}

/// What the data directory holds for a task.
public struct PreparedDataState: Equatable, Sendable {
    public var isReady: Bool
    /// One line: the files, sizes and sample counts, or what is missing.
    public var description: String

    public init(isReady: Bool, description: String) {
        self.isReady = isReady
        self.description = description
    }
}

/// A task whose data live in the data directory, put there by `longmixer data prepare <task>`
/// (obtained from a pinned package and checksum-verified, or generated from a seed). Training such a
/// task without its data stops with one line naming that command.
public protocol PreparableTask: Task {
    /// The task's folder under the data directory.
    var dataFolder: String { get }
    /// What `dataDirectory/dataFolder` holds.
    func dataState(in dataDirectory: URL) -> PreparedDataState
    /// Obtains or generates the data into `dataDirectory/dataFolder`. Writes into a temporary folder
    /// renamed into place at the end, so an interrupted run never leaves data that look ready.
    /// `log` receives progress lines.
    func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws
    /// Generated data: the reference's samples per split, which `data prepare --train-size` etc.
    /// may change (nil: the splits have fixed sizes, e.g. data obtained from a package).
    var defaultSplitSizes: SplitSizes? { get }
    /// Prepares `sizes` samples per split instead of `defaultSplitSizes` (nil: those).
    func prepare(into dataDirectory: URL, seed: UInt64, sizes: SplitSizes?, log: (String) -> Void) throws
}

extension PreparableTask {
    public var defaultSplitSizes: SplitSizes? { nil }

    public func prepare(into dataDirectory: URL, seed: UInt64, sizes: SplitSizes?, log: (String) -> Void) throws {
        if sizes != nil {
            throw UserError(what: "--train-size", why: "the \(name) task's splits have fixed sizes",
                            remedy: "drop --train-size, --val-size and --test-size here; cap the splits when training instead")
        }
        try prepare(into: dataDirectory, seed: seed, log: log)
    }

    /// The data directory of `options`, or a runtime error naming the command that prepares it.
    public func readyDataDirectory(_ options: TaskDataOptions) throws -> URL {
        let directory = URL(fileURLWithPath: options.dataDirectory ?? TaskDataOptions.defaultDataDirectory)
        let state = dataState(in: directory)
        guard state.isReady else {
            throw UserError(what: "\(name) data", value: directory.appendingPathComponent(dataFolder).path,
                            why: state.description, remedy: "run `longmixer data prepare \(name)\(options.dataDirectory.map { " --data-dir \($0)" } ?? "")`")
        }
        return directory
    }
}

/// The Paramixer paper's synthetic tasks (`SyntheticTask`) as `Task`s.
public struct SyntheticTaskDefinition: Task {
    public let task: SyntheticTask
    public init(_ task: SyntheticTask) { self.task = task }

    public var name: String { task.rawValue }
    public var summary: String {
        task == .adding ? "Adding problem: sum of two marked values among N (regression, accuracy |error| < 0.04)"
            : "Temporal Order: the order of two marked symbols among N noise tokens (4 classes)"
    }
    public var input: TaskInput {
        task == .adding ? .features(task.inputFeatures!) : .tokens(vocabulary: task.vocabularySize!, paddingIndex: nil)
    }
    public var objective: TaskObjective { task.objective }
    public var isCausal: Bool { false }
    public var dataOptions: Set<TaskDataOption> { [.trainSize, .validationSize, .testSize] }
    public var minimumLength: Int { 2 }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        let sizes = options.splitSizes ?? .reference
        let d = try SyntheticDataset.splits(task: task, length: options.length, sizes: sizes, seed: options.seed)
        return TaskData(train: d.train, validation: d.validation, test: d.test)
    }
}

/// Byte-level language modelling on a text corpus (90/5/5 % contiguous splits).
public struct ByteLanguageModelTask: Task {
    public init() {}
    public var name: String { "lm" }
    public var summary: String { "byte-level language modelling on --corpus (bits per byte, perplexity)" }
    public var input: TaskInput { .tokens(vocabulary: ByteCorpus.vocabularySize, paddingIndex: ByteCorpus.paddingIndex) }
    public var objective: TaskObjective { .languageModel(vocabulary: ByteCorpus.vocabularySize, ignoreIndex: ByteCorpus.paddingIndex) }
    public var isCausal: Bool { true }
    public var dataOptions: Set<TaskDataOption> { [.corpus, .validationSize, .testSize] }
    public var minimumLength: Int { 1 }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        guard let path = options.corpus else {
            throw UserError(what: "--corpus", why: "the lm task needs a text file or a folder of .txt files",
                            remedy: "e.g. `longmixer data fetch shakespeare`, then --corpus data/shakespeare")
        }
        let corpus: ByteCorpus
        let windows: (train: ByteWindows, validation: ByteWindows, test: ByteWindows)
        do {
            corpus = try ByteCorpus(path: path)
            // Training by steps draws one fresh random window per sample of the run; otherwise one
            // epoch is ⌊train bytes / N⌋ windows.
            let perEpoch = max(1, corpus.splitRanges().train.count / max(options.length, 1))
            windows = try corpus.windows(length: options.length, seed: options.seed, trainWindows: max(perEpoch, trainSamples ?? 0),
                                         validationWindows: options.validationLimit, testWindows: options.testLimit)
        } catch let e as ByteCorpusError {
            throw UserError(what: "--corpus", value: path, why: "\(e)")
        }
        let files = corpus.files.count
        let splits = corpus.hasFixedSplits ? " (its own train / valid / test files)" : ""
        let summary = "corpus \(path): \(corpus.count) bytes in \(files) file\(files == 1 ? "" : "s")\(splits); windows of \(options.length): "
            + "\(windows.train.count) train (random offsets), \(windows.validation.count) validation, \(windows.test.count) test"
        return TaskData(train: windows.train, validation: windows.validation, test: windows.test, summary: summary)
    }
}

public enum TaskRegistry {
    public static let all: [any Task] = [
        SyntheticTaskDefinition(.adding), SyntheticTaskDefinition(.order), ByteLanguageModelTask(),
        ListOpsTask(), TextTask(), RetrievalTask(), LongDocumentTask(), LongDocumentTask.longdoc32K,
        PathfinderTask.pathfinder,
        PathfinderTask.pathfinderEasy,
        PathfinderTask.pathfinderIntermediate,
        PathfinderTask.pathX,
        ImageTask(),
        MNISTTask(),
        GenomeTask(),
    ]

    public static var names: [String] { all.map(\.name) }

    /// The task called `name`, or a usage error naming the valid tasks.
    public static func task(_ name: String) throws -> any Task {
        guard let t = all.first(where: { $0.name == name.lowercased() }) else {
            throw UserError(what: "--task", value: name, why: "unknown task", remedy: "valid tasks: \(names.joined(separator: ", "))")
        }
        return t
    }
}
