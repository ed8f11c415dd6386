import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

// Losses and metrics per task objective, and the JSON Lines metrics log.

extension TaskObjective {
    /// The training loss of model outputs [B, C] against a batch's targets: MSE for regression,
    /// mean cross-entropy for classes. Throws when the targets do not match the objective.
    public func loss(_ outputs: Variable, _ targets: Targets) throws -> Variable {
        switch (self, targets) {
        case (.regression, .values(let y)):
            guard outputs.shape == y.shape else {
                throw TrainingError.shapeMismatch("model outputs \(outputs.shape) ≠ regression targets \(y.shape)")
            }
            return meanSquaredError(outputs, Variable(y))
        case (.classification(let classes), .classes(let labels)):
            guard outputs.rank == 2, outputs.shape[1] == classes, outputs.shape[0] == labels.count else {
                throw TrainingError.shapeMismatch("model outputs \(outputs.shape) do not fit \(labels.count) labels of \(classes) classes")
            }
            return crossEntropy(logits: outputs, targets: labels)
        case (.languageModel(let v, let ignore), .tokens(let t)):
            guard outputs.rank == 3, outputs.shape[2] == v, t.rank == 2, outputs.shape[0] == t.shape[0], outputs.shape[1] == t.shape[1] else {
                throw TrainingError.shapeMismatch("model outputs \(outputs.shape) do not fit token targets \(t.shape) over a vocabulary of \(v)")
            }
            guard t.scalars.contains(where: { $0 != Int32(ignore) }) else {
                throw TrainingError.shapeMismatch("every token target of the batch is the ignore index \(ignore)")
            }
            let rows = t.shape[0] * t.shape[1]
            return crossEntropy(logits: reshape(outputs, [rows, v]), targets: t.reshaped([rows]), ignoreIndex: ignore)
        case (.binary, .classes(let labels)):
            guard outputs.shape == [labels.count, 1] else {
                throw TrainingError.shapeMismatch("model outputs \(outputs.shape) do not fit \(labels.count) binary labels (one logit each)")
            }
            guard labels.scalars.allSatisfy({ $0 == 0 || $0 == 1 }) else {
                throw TrainingError.shapeMismatch("binary labels must be 0 or 1, got \(Set(labels.scalars).sorted())")
            }
            return binaryCrossEntropy(logits: outputs, targets: Tensor(shape: [labels.count, 1], scalars: labels.scalars.map { Float($0) }))
        case (.binary, _):
            throw TrainingError.shapeMismatch("a binary task needs 0/1 class targets")
        case (.languageModel, _):
            throw TrainingError.shapeMismatch("a language-model task needs per-position token targets")
        case (_, .tokens):
            throw TrainingError.shapeMismatch("a per-sequence task got per-position token targets")
        case (.regression, .classes):
            throw TrainingError.shapeMismatch("a regression task got class targets")
        case (.classification, .values):
            throw TrainingError.shapeMismatch("a classification task got real-valued targets")
        }
    }

    /// What a batch's loss and accuracy are averaged over: its sequences, or for a language model its
    /// counted target tokens (those that are not the ignore index).
    public func weight(_ targets: Targets, batchSize: Int) -> Int {
        if case .languageModel(_, let ignore) = self, case .tokens(let t) = targets {
            return t.scalars.reduce(0) { $0 + ($1 == Int32(ignore) ? 0 : 1) }
        }
        return batchSize
    }

    /// Number of correct predictions in a batch: |error| < tolerance on every output (regression),
    /// or argmax = label (classification; ties go to the lowest class).
    public func correctCount(_ outputs: Tensor, _ targets: Targets) -> Int {
        switch (self, targets) {
        case (.regression(let o, let tolerance), .values(let y)):
            let rows = y.count / max(o, 1)
            var correct = 0
            for r in 0..<rows {
                var ok = true
                for j in 0..<o where !(abs(outputs[flat: r * o + j] - y[flat: r * o + j]) < tolerance) { ok = false }
                if ok { correct += 1 }
            }
            return correct
        case (.classification(let c), .classes(let labels)):
            var correct = 0
            for r in 0..<labels.count {
                var best = 0
                for j in 1..<max(c, 1) where outputs[flat: r * c + j] > outputs[flat: r * c + best] { best = j }
                if best == Int(labels.scalars[r]) { correct += 1 }
            }
            return correct
        case (.binary, .classes(let labels)):
            var correct = 0
            for r in 0..<labels.count where (outputs[flat: r] > 0 ? 1 : 0) == labels.scalars[r] { correct += 1 }
            return correct
        case (.languageModel(let v, let ignore), .tokens(let t)):
            // Counted target tokens whose argmax logit is the target (ties go to the lowest id).
            var correct = 0
            outputs.withUnsafePointer { o in
                for r in 0..<t.count where t.scalars[r] != Int32(ignore) {
                    let row = o + r * v
                    var best = 0
                    for j in 1..<max(v, 1) where row[j] > row[best] { best = j }
                    if best == Int(t.scalars[r]) { correct += 1 }
                }
            }
            return correct
        default:
            return 0
        }
    }

    /// Name of the metric reported as "accuracy".
    public var accuracyDescription: String {
        switch self {
        case .regression(_, let tolerance): return "fraction with |error| < \(tolerance)"
        case .classification: return "argmax accuracy"
        case .binary: return "accuracy of logit > 0"
        case .languageModel: return "next-token argmax accuracy per counted token"
        }
    }

    /// Name of the loss.
    public var lossName: String {
        switch self {
        case .regression: return "mse"
        case .classification: return "cross-entropy"
        case .binary: return "binary cross-entropy"
        case .languageModel: return "token cross-entropy (nats per token)"
        }
    }
}

/// Loss and accuracy over a set of samples.
public struct EvaluationResult: Codable, Equatable, Sendable {
    /// Mean loss per sample (language model: per counted target token, in nats).
    public var loss: Double
    /// Fraction of correct predictions (language model: of counted target tokens).
    public var accuracy: Double
    /// Number of samples evaluated.
    public var count: Int
    /// Language model only: counted target tokens, perplexity exp(loss) and bits per byte
    /// loss / ln 2 (each token of a byte-level model is one byte).
    public var tokens: Int?
    public var perplexity: Double?
    public var bitsPerByte: Double?
    /// Binary tasks, evaluation splits: area under the ROC curve of the predicted probabilities.
    public var rocAUC: Double?

    public init(loss: Double, accuracy: Double, count: Int, tokens: Int? = nil) {
        self.loss = loss
        self.accuracy = accuracy
        self.count = count
        self.tokens = tokens
        if tokens != nil {
            perplexity = Foundation.exp(loss)
            bitsPerByte = bitsPerByteFromNats(loss)
        }
    }
}

/// Bits per byte of a byte-level model from its mean negative log-likelihood in nats per byte.
public func bitsPerByteFromNats(_ nats: Double) -> Double { nats / Foundation.log(2.0) }

/// Evaluates `model` on every sample of `source` in eval mode without recording gradients, and
/// restores the model's previous training mode. Loss is the per-sample mean (batches weighted by size).
///
/// With several processes (`communicator`), each evaluates every K-th batch (rank r: batches r, r + K, …)
/// and the per-batch sums are gathered, then added in batch order on every process: the result is the
/// one process's, bit for bit, on every rank. `progress` sees (batches done, batches in all) after every
/// round of K batches, the same number of times on every rank (it may run a collective); what it throws
/// stops the evaluation.
public func evaluate(_ model: some SequenceModel, on source: some BatchSource, objective: TaskObjective,
                     batchSize: Int, communicator: any Communicator = SingleProcess(),
                     progress: (Int, Int) throws -> Void = { _, _ in }) throws -> EvaluationResult {
    check(batchSize >= 1, "evaluate: batch size must be ≥ 1, got \(batchSize)")
    let wasTraining = model.isTraining
    model.eval()
    defer { model.train(wasTraining) }
    let batches = source.batchCount(size: batchSize)
    let ranks = communicator.size, rank = communicator.rank
    // Per batch: loss × weight, correct, sequences, loss weight, binary scores; zero for another rank's batches.
    let fields = 5
    var sums = [Double](repeating: 0, count: batches * fields)
    var ownScores: [(batch: Int, scores: [Float], labels: [Bool])] = []
    try withoutGradient {
        for round in 0..<((batches + ranks - 1) / ranks) {
            let index = round * ranks + rank
            if index < batches {
                let batch = source.batch(at: index, size: batchSize)
                let outputs = model(batch.input)
                let loss = try objective.loss(outputs, batch.targets).value.scalar
                let weight = objective.weight(batch.targets, batchSize: batch.size)
                var scored = 0
                if case .binary = objective, case .classes(let y) = batch.targets {
                    let scores = outputs.value.scalars
                    check(scores.count == batch.size, "evaluate: \(scores.count) binary scores for \(batch.size) sequences")
                    ownScores.append((index, scores, y.scalars.map { $0 == 1 }))
                    scored = scores.count
                }
                let row = index * fields
                sums[row] = Double(loss) * Double(weight)
                sums[row + 1] = Double(objective.correctCount(outputs.value, batch.targets))
                sums[row + 2] = Double(batch.size)
                sums[row + 3] = Double(weight)
                sums[row + 4] = Double(scored)
            }
            try progress(min((round + 1) * ranks, batches), batches)
        }
    }
    if ranks > 1 { try sums.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) } }
    var lossSum = 0.0, correct = 0, seen = 0, weightSum = 0
    for index in 0..<batches {
        let row = index * fields
        lossSum += sums[row]
        correct += Int(sums[row + 1])
        seen += Int(sums[row + 2])
        weightSum += Int(sums[row + 3])
    }
    let isLanguageModel: Bool
    if case .languageModel = objective { isLanguageModel = true } else { isLanguageModel = false }
    var result = EvaluationResult(loss: lossSum / Double(max(weightSum, 1)), accuracy: Double(correct) / Double(max(weightSum, 1)),
                                  count: seen, tokens: isLanguageModel ? weightSum : nil)
    if case .binary = objective {
        // Every batch's scores and labels at its place (another rank's entries are 0 here, so the sum is a gather).
        var offsets = [Int](repeating: 0, count: batches + 1)
        for index in 0..<batches { offsets[index + 1] = offsets[index] + Int(sums[index * fields + 4]) }
        var scores = [Float](repeating: 0, count: offsets[batches]), labels = scores
        for own in ownScores {
            for (i, (score, label)) in zip(own.scores, own.labels).enumerated() {
                scores[offsets[own.batch] + i] = score
                labels[offsets[own.batch] + i] = label ? 1 : 0
            }
        }
        if ranks > 1 {
            try scores.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
            try labels.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
        }
        result.rocAUC = rocAUC(scores: scores, labels: labels.map { $0 == 1 })
    }
    return result
}

/// Area under the ROC curve: the probability that a random positive scores above a random negative
/// (ties count half), from the ranks of the scores (Mann–Whitney U). Any monotone map of the scores
/// (logits or σ(logits)) gives the same value. nil when one class is absent.
public func rocAUC(scores: [Float], labels: [Bool]) -> Double? {
    check(scores.count == labels.count, "rocAUC: \(scores.count) scores for \(labels.count) labels")
    let positives = labels.filter { $0 }.count, negatives = labels.count - positives
    guard positives > 0 && negatives > 0 else { return nil }
    let order = scores.indices.sorted { scores[$0] < scores[$1] }
    // Average ranks (1-based) over runs of equal scores.
    var rankSumOfPositives = 0.0
    var i = 0
    while i < order.count {
        var j = i
        while j + 1 < order.count && scores[order[j + 1]] == scores[order[i]] { j += 1 }
        let averageRank = Double(i + j + 2) / 2
        for k in i...j where labels[order[k]] { rankSumOfPositives += averageRank }
        i = j + 1
    }
    let u = rankSumOfPositives - Double(positives) * Double(positives + 1) / 2
    return u / (Double(positives) * Double(negatives))
}

/// One line of `metrics.jsonl`.
public struct MetricsRecord: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable {
        /// Running training metrics since the previous train record.
        case train
        case validation
        case test
    }

    /// Optimizer steps taken so far.
    public var step: Int
    /// Epoch (from 0) in which the record was taken; fractional progress is `samplesSeen / trainCount`.
    public var epoch: Int
    public var split: Kind
    public var loss: Double
    public var accuracy: Double
    /// Wall-clock seconds since training started.
    public var elapsedSeconds: Double
    /// Training samples processed so far.
    public var samplesSeen: Int
    /// Train records: the learning rate of the last step.
    public var learningRate: Double?
    /// Train records: training throughput over the logging window.
    public var samplesPerSecond: Double?
    /// Train records: mean global gradient norm (before clipping) over the logging window.
    public var gradientNorm: Double?
    /// Evaluation records: samples evaluated.
    public var evaluatedSamples: Int?
    /// Language model only: bits per byte and perplexity of `loss`.
    public var bitsPerByte: Double?
    public var perplexity: Double?
    /// Binary tasks, evaluation records: ROC-AUC of the predicted probabilities.
    public var rocAUC: Double?
    /// Test records: the weights scored, `best` (by validation) or `last`.
    public var checkpoint: CheckpointKind?

    public init(step: Int, epoch: Int, split: Kind, loss: Double, accuracy: Double, elapsedSeconds: Double, samplesSeen: Int,
                learningRate: Double? = nil, samplesPerSecond: Double? = nil, gradientNorm: Double? = nil,
                evaluatedSamples: Int? = nil) {
        self.step = step
        self.epoch = epoch
        self.split = split
        self.loss = loss
        self.accuracy = accuracy
        self.elapsedSeconds = elapsedSeconds
        self.samplesSeen = samplesSeen
        self.learningRate = learningRate
        self.samplesPerSecond = samplesPerSecond
        self.gradientNorm = gradientNorm
        self.evaluatedSamples = evaluatedSamples
    }

    /// Adds bits per byte and perplexity when `objective` is a language model.
    public func withLanguageModelMetrics(_ objective: TaskObjective) -> MetricsRecord {
        guard case .languageModel = objective else { return self }
        var r = self
        r.bitsPerByte = bitsPerByteFromNats(loss)
        r.perplexity = Foundation.exp(loss)
        return r
    }
}

/// Appends one JSON object per line to a file, flushing after every line so a crashed or
/// interrupted run keeps everything logged so far.
public final class JSONLinesWriter {
    public let url: URL
    private let handle: FileHandle
    private let encoder: JSONEncoder

    /// Bytes in the file so far.
    public private(set) var size: UInt64 = 0

    /// Creates the file, or with `keeping` opens it and cuts it to its first `keeping` bytes (a
    /// resumed run drops what was logged after its checkpoint).
    public init(url: URL, keeping: UInt64? = nil) throws {
        self.url = url
        if keeping == nil || !FileManager.default.fileExists(atPath: url.path) {
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw RunDirectoryError.notWritable(url.path, "cannot create the file")
            }
        }
        handle = try FileHandle(forWritingTo: url)
        if let keeping {
            let end = try handle.seekToEnd()
            size = min(keeping, end)
            try handle.truncate(atOffset: size)
            try handle.seek(toOffset: size)
        }
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    }

    public func append(_ value: some Encodable) throws {
        var data = try encoder.encode(value)
        data.append(0x0A)
        try handle.write(contentsOf: data)
        size += UInt64(data.count)
    }

    deinit { try? handle.close() }
}

/// Reads a JSON Lines file back (one decoded value per non-empty line).
public func readJSONLines<T: Decodable>(_ type: T.Type, from url: URL) throws -> [T] {
    let text = try String(contentsOf: url, encoding: .utf8)
    let decoder = JSONDecoder()
    decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return try text.split(separator: "\n", omittingEmptySubsequences: true).map {
        try decoder.decode(T.self, from: Data($0.utf8))
    }
}
