import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

/// Peak memory of a training run, estimated from its configuration alone (nothing is built), so that
/// a run that cannot fit is refused before anything is allocated.
///
/// Counted, in floats: parameters with their gradients, the two Adam moments and the copy of the best
/// weights the trainer keeps for the final test (5 per parameter);
/// per sequence of a training piece (the micro-batch), every activation a block keeps for the
/// backward pass and, at the peak of the backward, as many gradients again; one evaluation batch of
/// activations without gradients; and a fixed allowance for the runtime and BLAS. Arithmetic is in
/// Double, so absurd sizes give a large estimate instead of an overflow.
public struct MemoryEstimate: Equatable, Sendable {
    public var parameters: Double
    /// Floats kept per training sequence.
    public var activationsPerSequence: Double
    public var sequencesPerPiece: Int
    public var bytes: Double

    /// Runtime, OpenBLAS buffers, data generation.
    public static let fixedBytes = 256.0 * 1024 * 1024

    public var gibibytes: Double { bytes / Double(1 << 30) }

    public init(_ c: RunConfiguration) throws {
        let task = try TaskRegistry.task(c.task)
        let entry = try ModelRegistry.entry(c.model)
        let family = ModelRegistry.family(of: entry, causal: task.isCausal)
        let n = Double(c.length), o = ModelRegistry.withDefaults(c.modelOptions, family: family)
        let outputs = Double(task.objective.outputCount)
        let inputWidth: Double
        switch task.input {
        case .tokens(let v, _): inputWidth = Double(v)
        case .features(let f): inputWidth = Double(f) + 1
        }
        var p = 0.0, acts = 0.0
        switch family {
        case .paramixer:
            let d = Double(o.dimensions!), h = Double(o.hidden!), blocks = Double(o.layers!)
            let m = Double(try LinkProtocols.factorCount(length: max(c.length, 2), rule: o.factorRule!))
            let links = o.linkProtocol! == .chord ? m + 1 : 9
            let mlp = { (out: Double) in d * h + h + h * out + out }
            let pooled = o.pooling! == .flatten ? n * d : d
            p = inputWidth * d + (o.positions == .learned ? n * d : 0) + blocks * (mlp(d) + m * mlp(links)) + pooled * outputs + outputs
            // data and V (two dropout copies); per block g's hidden pair and output; per factor the
            // f-MLP's hidden pair, its link weights, the product and the residual sum.
            acts = n * (3 * d + blocks * (2 * h + d + m * (2 * h + links + 2 * d)))
        case .encoder, .decoder:
            let d = Double(o.dimensions!), layers = Double(o.layers!), ff = Double(o.feedForward!)
            let kind = family == .decoder ? entry.causalMixer! : entry.mixer!
            let fm = Double(MixerConfiguration(kind: kind).featureMultiplier)
            let perLayer = 2 * (d * d * fm + d * fm) + 2 * (d * d + d) + 4 * d + 2 * d * ff + ff + d
            p = inputWidth * d + d + layers * perLayer + (family == .decoder ? 2 * d : (n + 1) * d + 2 * d + d * d + d + d * outputs + outputs)
            // per layer: two layer norms, Q and K at fm·D and their features, V, the mixer's and the
            // output projection's results, the residual, the FFN's hidden pair.
            acts = n * (2 * d + layers * (8 * d + 4 * d * fm + 2 * ff))
            if family == .decoder { acts += n * 3 * outputs }    // logits, log-softmax and its gradient
        }
        if task.layout == .pair { acts *= 2 }    // both documents pass through the encoder
        let piece = c.training.microBatchSize ?? c.training.batchSize
        let evaluation = c.training.evaluationBatchSize ?? c.training.batchSize
        parameters = p
        activationsPerSequence = acts
        sequencesPerPiece = piece
        let inputs = Double(c.training.batchSize) * n * inputWidth.squareRoot()   // a batch's input tensor, order of magnitude
        bytes = 4 * (5 * p + 2 * acts * Double(piece) + acts * Double(evaluation) / 2 + inputs) + Self.fixedBytes
    }

    /// MemAvailable of /proc/meminfo (nil where it cannot be read).
    public static func availableBytes() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Double(parts[1]) { return kb * 1024 }
        }
        return nil
    }

    /// Refuses a run whose estimate exceeds the available memory, naming what lowers it.
    public func check(available: Double? = MemoryEstimate.availableBytes()) throws {
        guard let available, bytes > available else { return }
        let gib = { (b: Double) in String(format: "%.1f GiB", b / Double(1 << 30)) }
        let remedy = sequencesPerPiece > 1
            ? "lower --micro-batch-size (now \(sequencesPerPiece) sequences per pass), --length or the model size"
            : "lower --length or the model size"
        throw UserError(what: "estimated peak memory", value: gib(bytes), why: "exceeds the \(gib(available)) available", remedy: remedy)
    }
}
