import Foundation
import Testing
import LongMixerTestSupport
import LongMixerTraining
@testable import LongMixerModels
import LongMixerCore
import LongMixerNN
import LongMixerData

/// The mathematics of the attention family: relative-position invariance (PermuteFormer 1D/2D,
/// its orthogonal ablation, RoPE eq. 19), identity permutation ≡ Performer, causality, recurrent
/// = parallel logits, checkpoints (buffers) reproduce outputs, bad configurations rejected.
@Suite("AttentionProperties")
struct AttentionPropertyTests {
    static func random(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
        var g = RandomGenerator(seed: seed)
        return Tensor.uniform(shape, low: -scale, high: scale, generator: &g)
    }

    static func copyParameters(from source: Module, to target: Module) {
        let values = Dictionary(uniqueKeysWithValues: source.namedParameters().map { ($0.0, $0.1.value) })
        for (name, p) in target.namedParameters() { p.value = values[name]! }
    }

    // A mask with padding at the end of the second row.
    static let mask = Tensor(shape: [2, 9], scalars: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])

    // MARK: Relative positions

    @Test("PermuteFormer 1D: shifting every position by the same offset leaves the output unchanged")
    func permuteFormerShiftInvariance() {
        var g = RandomGenerator(seed: 1)
        // Large inputs so the ReLU features are far from ε and the permutation matters.
        let mixer = PermuteFormerAttention(dimensions: 16, heads: 2, generator: &g)
        let x = Variable(Self.random([2, 9, 16], seed: 2, scale: 3))
        let base = mixer(x, keyMask: Self.mask, positions: Array(0..<9)).value
        for offset in [1, 5, 37, 1000] {
            let shifted = mixer(x, keyMask: Self.mask, positions: Array(offset..<(offset + 9))).value
            #expect(relativeError(shifted, base) < 1e-5, "offset \(offset)")
        }
        // … while a non-uniform change of positions does change it (the encoding is not void).
        var swapped = Array(0..<9); swapped.swapAt(0, 4)
        #expect(relativeError(mixer(x, keyMask: Self.mask, positions: swapped).value, base) > 1e-3)
        // The protocol call uses positions 0..<N.
        #expect(relativeError(mixer(x, keyMask: Self.mask).value, base) == 0)
    }

    @Test("PermuteFormer 2D: shifting all x and all y positions leaves the output unchanged; depends on (Δx, Δy)")
    func permuteFormer2DShiftInvariance() {
        var g = RandomGenerator(seed: 3)
        let grid = ImageGrid(width: 3, height: 2, prefix: 1, suffix: 1)   // N = 8
        let mixer = PermuteFormer2DAttention(dimensions: 16, heads: 2, grid: grid, generator: &g)
        let x = Variable(Self.random([2, 8, 16], seed: 4, scale: 3))
        let (xs, ys) = grid.positions(length: 8)
        #expect(xs == [0, 0, 1, 2, 0, 1, 2, 2] && ys == [0, 0, 0, 0, 1, 1, 1, 1])
        let base = mixer(x, keyMask: nil).value
        for (dx, dy) in [(1, 0), (0, 3), (7, 11)] {
            let shifted = mixer(x, keyMask: nil, xPositions: xs.map { $0 + dx }, yPositions: ys.map { $0 + dy }).value
            #expect(relativeError(shifted, base) < 1e-5, "shift (\(dx), \(dy))")
        }
        // Transposing the image layout changes the output (x and y halves are distinct).
        let transposed = mixer(x, keyMask: nil, xPositions: ys, yPositions: xs).value
        #expect(relativeError(transposed, base) > 1e-3)
        // One permutation of half the feature width per head: F/2 = 4·8/2.
        #expect(mixer.permutations.count == 2 && mixer.permutations[0].size == 16)
    }

    @Test("w/o Property 3: R^t via rotation blocks equals t-fold multiplication by R, and scores stay relative")
    func orthogonalPowers() {
        var g = RandomGenerator(seed: 5)
        let mixer = OrthogonalFormerAttention(dimensions: 8, heads: 2, featureMultiplier: 1, generator: &g)
        let f = 4
        let x = Variable(Self.random([1, 2, 1, f], seed: 6))
        let r1 = mixer.applyPowers(x, positions: [1]).value
        // R_h is orthogonal: U rot(θ) Uᵀ with orthonormal U.
        let u = mixer.basis.value
        for h in 0..<2 {
            for i in 0..<f {
                for j in 0..<f {
                    var dot: Float = 0
                    for k in 0..<f { dot += u[flat: h * f * f + i * f + k] * u[flat: h * f * f + j * f + k] }
                    #expect(abs(dot - (i == j ? 1 : 0)) < 1e-5)
                }
            }
        }
        var repeated = x
        for _ in 0..<5 { repeated = mixer.applyPowers(repeated, positions: [1]) }
        let r5 = mixer.applyPowers(x, positions: [5]).value
        #expect(relativeError(r5, repeated.value) < 1e-5)
        #expect(relativeError(r1, x.value) > 1e-3)
        let input = Variable(Self.random([2, 9, 8], seed: 7, scale: 3))
        let base = mixer(input, keyMask: Self.mask).value
        let shifted = mixer(input, keyMask: Self.mask, positions: Array(3..<12)).value
        #expect(relativeError(shifted, base) < 1e-4)
    }

    @Test("RoPE-Performer (eq. 19) is invariant to a common shift of positions")
    func ropeShiftInvariance() {
        var g = RandomGenerator(seed: 8)
        let mixer = RoPEPerformerAttention(dimensions: 16, heads: 2, generator: &g)
        let x = Variable(Self.random([2, 9, 16], seed: 9, scale: 3))
        let base = mixer(x, keyMask: Self.mask).value
        let shifted = mixer(x, keyMask: Self.mask, positions: Array(4..<13)).value
        #expect(relativeError(shifted, base) < 1e-4)
        // Denominator un-rotated: at position 0 only (all angles 0 for a single token) RoPE = Performer.
        var g2 = RandomGenerator(seed: 8)
        let performer = PerformerAttention(dimensions: 16, heads: 2, generator: &g2)
        Self.copyParameters(from: mixer, to: performer)
        let one = Variable(Self.random([1, 1, 16], seed: 10))
        #expect(relativeError(mixer(one, keyMask: nil).value, performer(one, keyMask: nil).value) < 1e-6)
        #expect(relativeError(mixer(x, keyMask: Self.mask).value, performer(x, keyMask: Self.mask).value) > 1e-3)
    }

    @Test("finite-difference gradients of every mixer with respect to its input", arguments: MixerKind.allCases)
    func mixerInputGradients(kind: MixerKind) {
        var g = RandomGenerator(seed: 70)
        var c = MixerConfiguration(kind: kind, grid: ImageGrid(width: 2, height: 2), randomFeatures: 8, chunkSize: 2)
        if kind == .favor || kind.isCausal { c.featureMultiplier = 2 }
        let mixer = kind.makeMixer(dimensions: 8, heads: 2, configuration: c, generator: &g)
        (mixer as Module).eval()
        let x = Variable(Self.random([1, 6, 8], seed: 71), requiresGradient: true)
        let mask: Tensor? = kind.isCausal || kind == .permuteFormer2D ? nil : Tensor(shape: [1, 6], scalars: [1, 1, 1, 1, 1, 0])
        let result = checkGradients([x], step: 1e-2, absoluteTolerance: 3e-3, relativeTolerance: 3e-3) { inputs in
            mixer(inputs[0], keyMask: mask)
        }
        #expect(result.passed, "\(kind): \(result)")
    }

    // MARK: Identity permutation

    @Test("PermuteFormer with identity permutations ≡ Performer (1D and 2D)")
    func identityPermutationIsPerformer() {
        var g1 = RandomGenerator(seed: 11), g2 = RandomGenerator(seed: 12), g3 = RandomGenerator(seed: 13)
        let permute = PermuteFormerAttention(dimensions: 16, heads: 2, generator: &g1)
        let performer = PerformerAttention(dimensions: 16, heads: 2, generator: &g2)
        let permute2D = PermuteFormer2DAttention(dimensions: 16, heads: 2, grid: ImageGrid(width: 7, height: 1), generator: &g3)
        Self.copyParameters(from: performer, to: permute)
        Self.copyParameters(from: performer, to: permute2D)
        let x = Variable(Self.random([2, 9, 16], seed: 14, scale: 3))
        let reference = performer(x, keyMask: Self.mask).value
        #expect(relativeError(permute(x, keyMask: Self.mask).value, reference) > 1e-3)
        permute.permutations = (0..<2).map { _ in CyclePermutation.identity(size: 32) }
        permute2D.permutations = (0..<2).map { _ in CyclePermutation.identity(size: 16) }
        #expect(relativeError(permute(x, keyMask: Self.mask).value, reference) < 1e-6)
        #expect(relativeError(permute2D(x, keyMask: Self.mask).value, reference) < 1e-6)
    }

    // MARK: Encoder structure

    static func tinyEncoder(_ kind: MixerKind, positions: EncoderConfiguration.Positions? = nil, head: EncoderConfiguration.Head = .classification,
                            seed: UInt64 = 20, permutationSeed: UInt64 = MixerConfiguration.referencePermutationSeed) throws -> EncoderClassifier {
        var mixer = MixerConfiguration(kind: kind, permutationSeed: permutationSeed, grid: ImageGrid(width: 2, height: 2))
        if kind == .favor { mixer.randomFeatures = 16 }
        let c = EncoderConfiguration(vocabularySize: 20, dimensions: 16, heads: 2, layers: 2, feedForwardDimensions: 24, dropout: 0.1,
                                     mixer: mixer, positions: positions, maxPositions: 12, head: head, classes: 3)
        var g = RandomGenerator(seed: seed)
        let model = try EncoderClassifier(configuration: c, generator: &g)
        model.eval()
        return model
    }

    static let tokens = IntTensor(shape: [2, 6], scalars: [1, 5, 7, 9, 11, 2, 1, 4, 19, 2, 0, 0])

    @Test("every mixer runs in the encoder with finite logits and gradients for every parameter", arguments: MixerKind.allCases.filter { !$0.isCausal })
    func everyMixerRuns(kind: MixerKind) throws {
        let model = try Self.tinyEncoder(kind)
        let ids = kind == .permuteFormer2D ? IntTensor(shape: [2, 6], scalars: [1, 5, 7, 9, 11, 2, 1, 4, 19, 3, 3, 2]) : Self.tokens
        let logits = model(.tokens(ids))
        #expect(logits.shape == [2, 3])
        #expect(logits.value.scalars.allSatisfy { $0.isFinite })
        let loss = crossEntropy(logits: logits, targets: IntTensor([0, 2]))
        try loss.backward()
        for (name, p) in model.namedParameters() where !name.hasPrefix("positionEmbedding") {
            let grad = try #require(p.grad, "\(kind): \(name) got no gradient")
            #expect(grad.scalars.allSatisfy { $0.isFinite }, "\(kind): \(name)")
        }
    }

    @Test("parameter names follow the reference layout; permutations are per-layer buffers shared by all layers")
    func namesAndSharedPermutations() throws {
        let model = try Self.tinyEncoder(.permuteFormer)
        let names = model.namedParameters().map(\.0)
        #expect(names.prefix(4) == ["embedding.weight", "tokenTypeEmbedding.weight", "embeddingNorm.weight", "embeddingNorm.bias"])
        #expect(names.contains("blocks.1.mixer.query.weight") && names.contains("blocks.0.intermediate.bias") && names.contains("pooler.weight"))
        #expect(model.namedParameters().first { $0.0 == "blocks.0.mixer.query.weight" }!.1.shape == [64, 16])   // 4 × 16
        #expect(model.namedParameters().first { $0.0 == "blocks.0.mixer.value.weight" }!.1.shape == [16, 16])
        let buffers = model.namedBuffers()
        #expect(buffers.map(\.0) == ["blocks.0.mixer.permutation", "blocks.1.mixer.permutation"])
        #expect(buffers[0].1.value.scalars == buffers[1].1.value.scalars)
        #expect(buffers[0].1.value.shape == [2, 32])
        // Each head's row is a permutation of 0..<32, and the two heads differ.
        let rows = (0..<2).map { h in (0..<32).map { Int(buffers[0].1.value[flat: h * 32 + $0]) } }
        #expect(rows.allSatisfy { $0.sorted() == Array(0..<32) } && rows[0] != rows[1])
    }

    @Test("a checkpoint (parameters + buffers) reproduces the outputs of a model built with another seed")
    func buffersReproduceOutputs() throws {
        for kind in [MixerKind.permuteFormer, .permuteFormer2D, .orthogonalFormer, .favor] {
            let a = try Self.tinyEncoder(kind, seed: 30, permutationSeed: 1)
            var c = a.configuration
            c.mixer.permutationSeed = 2
            c.mixer.featureSeed = 99
            var g = RandomGenerator(seed: 31)
            let b = try EncoderClassifier(configuration: c, generator: &g)
            b.eval()
            let ids = IntTensor(shape: [2, 6], scalars: [1, 5, 7, 9, 11, 2, 1, 4, 19, 3, 3, 2])
            Self.copyParameters(from: a, to: b)
            #expect(relativeError(b(.tokens(ids)).value, a(.tokens(ids)).value) > 1e-6, "\(kind): seeds should differ")
            let saved = Dictionary(uniqueKeysWithValues: a.namedBuffers().map { ($0.0, $0.1.value) })
            for (name, buffer) in b.namedBuffers() { buffer.value = saved[name]! }
            #expect(relativeError(b(.tokens(ids)).value, a(.tokens(ids)).value) == 0, "\(kind)")
            // The same through a safetensors checkpoint file, into a third model built with other seeds.
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("attention_checkpoint_\(kind.rawValue)_\(getpid()).safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try a.saveWeights(to: url)
            var g3 = RandomGenerator(seed: 32)
            let restored = try EncoderClassifier(configuration: c, generator: &g3)
            restored.eval()
            try restored.loadWeights(from: url)
            #expect(relativeError(restored(.tokens(ids)).value, a(.tokens(ids)).value) == 0, "\(kind) via file")
        }
    }

    @Test("retrieval head: both documents through one encoder, MLP on [p1, p2]; swapping documents changes the logit")
    func retrievalTwoTowers() throws {
        let model = try Self.tinyEncoder(.performer, head: .retrieval)
        let pair = IntTensor(shape: [1, 12], scalars: [1, 5, 7, 9, 2, 0, 1, 4, 19, 3, 2, 0])
        let out = model(.tokens(pair))
        #expect(out.shape == [1, 1])
        // Same as encoding each document alone.
        let p1 = model.pooled(IntTensor(shape: [1, 6], scalars: [1, 5, 7, 9, 2, 0]))
        let p2 = model.pooled(IntTensor(shape: [1, 6], scalars: [1, 4, 19, 3, 2, 0]))
        let manual = (model.head as! Sequential)(concatenate([p1, p2], axis: 1))
        #expect(relativeError(out.value, manual.value) < 1e-6)
        let swapped = model(.tokens(IntTensor(shape: [1, 12], scalars: [1, 4, 19, 3, 2, 0, 1, 5, 7, 9, 2, 0])))
        #expect(abs(swapped.value.scalar - out.value.scalar) > 1e-7)
        #expect(model.namedParameters().map(\.0).suffix(6) == ["head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias", "head.4.weight", "head.4.bias"])
    }

    @Test("padding: appending PAD tokens does not change a Performer-family encoder's logits")
    func paddingIsIgnored() throws {
        for kind in [MixerKind.softmax, .performer, .permuteFormer, .ropePerformer] {
            let model = try Self.tinyEncoder(kind, positions: EncoderConfiguration.Positions.none)
            let short = model(.tokens(IntTensor(shape: [1, 4], scalars: [1, 5, 7, 2]))).value
            let padded = model(.tokens(IntTensor(shape: [1, 7], scalars: [1, 5, 7, 2, 0, 0, 0]))).value
            #expect(relativeError(padded, short) < 1e-5, "\(kind)")
        }
    }

    // MARK: FAVOR+

    @Test("FAVOR+: Ω has orthogonal rows within a block; redraw policy fixed vs every k training passes")
    func favorRedraw() {
        var g = RandomGenerator(seed: 40)
        let fixed = FavorAttention(dimensions: 16, heads: 2, randomFeatures: 12, generator: &g)
        let redrawn = FavorAttention(dimensions: 16, heads: 2, randomFeatures: 12, redrawInterval: 2, generator: &g)
        let omega = fixed.projection.value
        #expect(omega.shape == [12, 8])
        for i in 0..<8 {
            for j in 0..<8 where i != j {
                var dot: Float = 0
                for k in 0..<8 { dot += omega[flat: i * 8 + k] * omega[flat: j * 8 + k] }
                #expect(abs(dot) < 1e-4)
            }
        }
        let x = Variable(Self.random([1, 5, 16], seed: 41))
        for _ in 0..<5 { _ = fixed(x, keyMask: nil) }
        #expect(fixed.projection.value.scalars == omega.scalars)
        let first = redrawn.projection.value.scalars
        _ = redrawn(x, keyMask: nil); _ = redrawn(x, keyMask: nil)
        #expect(redrawn.projection.value.scalars == first)
        _ = redrawn(x, keyMask: nil)
        #expect(redrawn.projection.value.scalars != first)
        let second = redrawn.projection.value.scalars
        redrawn.eval()
        for _ in 0..<5 { _ = redrawn(x, keyMask: nil) }
        #expect(redrawn.projection.value.scalars == second)
    }

    @Test("FAVOR+ features estimate the softmax kernel: attention close to exact softmax attention with many features")
    func favorApproximatesSoftmax() {
        let n = 6, f = 4, m = 4096
        var g = RandomGenerator(seed: 42)
        let mixer = FavorAttention(dimensions: f, heads: 1, randomFeatures: m, generator: &g)
        let q = Variable(Self.random([1, 1, n, f], seed: 43, scale: 0.7)), k = Variable(Self.random([1, 1, n, f], seed: 44, scale: 0.7))
        let v = Variable(Self.random([1, 1, n, 3], seed: 45))
        let approx = linearAttention(queries: mixer.featureMap(q, isQuery: true), keys: mixer.featureMap(k, isQuery: false), values: v)
        let exact = matmul(softmax(matmul(q, k, transposeB: true) * (1 / Float(f).squareRoot()), axis: -1), v)
        #expect(relativeError(approx.value, exact.value) < 0.05)
    }

    // MARK: Causal LM

    static func tinyLM(_ kind: MixerKind, normalized: Bool = false, tied: Bool = true) throws -> CausalLanguageModel {
        let c = LanguageModelConfiguration(dimensions: 16, heads: 2, layers: 2, feedForwardDimensions: 32, dropout: 0.1,
                                           mixer: MixerConfiguration(kind: kind, normalized: normalized, chunkSize: 4), tiedOutput: tied)
        var g = RandomGenerator(seed: 50)
        let model = try CausalLanguageModel(configuration: c, generator: &g)
        model.eval()
        return model
    }

    static let causalCases: [(MixerKind, Bool)] = MixerKind.allCases.filter(\.isCausal).flatMap { [($0, false), ($0, true)] }

    @Test("causal: logits at t do not depend on tokens after t", arguments: causalCases)
    func causality(kind: MixerKind, normalized: Bool) throws {
        let model = try Self.tinyLM(kind, normalized: normalized)
        var ids = (0..<11).map { Int32(3 + ($0 * 37) % 250) }
        let base = model(IntTensor(shape: [1, 11], scalars: ids)).value
        let v = 259, t = 5
        ids[t + 1] = 200; ids[10] = 4
        let changed = model(IntTensor(shape: [1, 11], scalars: ids)).value
        let prefix = Tensor(shape: [(t + 1) * v], scalars: Array(base.scalars[0..<((t + 1) * v)]))
        let changedPrefix = Tensor(shape: [(t + 1) * v], scalars: Array(changed.scalars[0..<((t + 1) * v)]))
        #expect(relativeError(changedPrefix, prefix) < 1e-6)
        #expect(relativeError(changed, base) > 1e-4)
    }

    @Test("causal PermuteFormer mixer: a common shift of positions leaves outputs unchanged (parallel and step)", arguments: [false, true])
    func causalShiftInvariance(normalized: Bool) {
        var g = RandomGenerator(seed: 80)
        let mixer = CausalPermuteFormerAttention(dimensions: 16, heads: 2, decay: CausalPermuteFormerAttention.referenceDecay(heads: 2),
                                                 normalized: normalized, chunkSize: 3, generator: &g)
        let x = Variable(Self.random([2, 9, 16], seed: 81, scale: 3))
        let base = mixer(x, keyMask: nil).value
        let shifted = mixer(x, keyMask: nil, positions: Array(100..<109)).value
        #expect(relativeError(shifted, base) < 1e-5)
        var state = mixer.makeState(batch: 2)
        var rows: [Tensor] = []
        for t in 0..<9 {
            rows.append(mixer.step(slice(x, axis: 1, t..<(t + 1)), position: 100 + t, state: &state).value)
        }
        #expect(relativeError(Tensor.concatenate(rows, axis: 1), base) < 1e-5)
    }

    @Test("no length limit without a learned table: PermuteFormer encoder beyond maxPositions, LM at N = 1500 stays finite")
    func longSequences() throws {
        let encoder = try Self.tinyEncoder(.permuteFormer)   // maxPositions 12, unused
        let ids = IntTensor(shape: [1, 50], scalars: [1] + (0..<48).map { Int32(3 + $0 % 17) } + [2])
        #expect(encoder(.tokens(ids)).value.scalars.allSatisfy { $0.isFinite })
        let lm = try Self.tinyLM(.causalPermuteFormer)
        let long = IntTensor(shape: [1, 1500], scalars: (0..<1500).map { Int32(3 + ($0 * 7) % 256) })
        #expect(lm(long).value.scalars.allSatisfy { $0.isFinite })
    }

    @Test("recurrent (generation) logits equal the parallel logits", arguments: causalCases)
    func recurrentEqualsParallel(kind: MixerKind, normalized: Bool) throws {
        let model = try Self.tinyLM(kind, normalized: normalized, tied: !normalized)
        let ids = IntTensor(shape: [2, 13], scalars: (0..<26).map { Int32(3 + ($0 * 91) % 256) })
        let parallel = model(ids).value
        let recurrent = model.recurrentLogits(ids)
        #expect(relativeError(recurrent, parallel) < 1e-4, "\(kind) normalized \(normalized)")
    }

    @Test("generate: greedy continuation = argmax of the parallel logits at each step; state memory independent of length")
    func generation() throws {
        let model = try Self.tinyLM(.causalPermuteFormer)
        var g = RandomGenerator(seed: 60)
        let prompt = ByteVocabulary.encode("ab")
        let out = model.generate(prompt: prompt, count: 6, temperature: 0, generator: &g)
        var sequence = prompt
        for token in out {
            let logits = model(IntTensor(shape: [1, sequence.count], scalars: sequence.map { Int32($0) })).value
            let v = 259, last = (sequence.count - 1) * v
            let row = Array(logits.scalars[last..<(last + v)])
            #expect(token == row.indices.max { row[$0] < row[$1] }!)
            sequence.append(token)
        }
        // In training mode generation still runs without dropout and leaves the flag as it was.
        model.train()
        var g2 = RandomGenerator(seed: 60)
        #expect(model.generate(prompt: prompt, count: 6, temperature: 0, generator: &g2) == out)
        #expect(model.isTraining)
        model.eval()
        let states = model.makeStates(batch: 1)
        guard case .linear(let first) = states[0] else { Issue.record("expected a linear state"); return }
        #expect(states.count == 2 && first.features == 8 && first.valueDimensions == 8 && first.decay != nil)
        #expect(model.namedBuffers().map(\.0) == ["blocks.0.mixer.permutation", "blocks.0.mixer.decay", "blocks.1.mixer.permutation", "blocks.1.mixer.decay"])
        let decay = model.blocks[0].mixer as! CausalPermuteFormerAttention
        let rates: [Float] = decay.decayRates!
        for (h, r) in rates.enumerated() {
            let expected: Double = 1 / (1 + Foundation.exp(-(2 + 1.5 * Double(h))))
            #expect(abs(Double(r) - expected) < 1e-6)
        }
        #expect(ByteVocabulary.decode(ByteVocabulary.encode("héllo")) == "héllo")
    }

    @Test("LM initialisation follows fairseq (Xavier q/k/v with gain 1/√2, Xavier output with zero bias, default FFN)")
    func languageModelInitialisation() throws {
        let c = LanguageModelConfiguration(dimensions: 64, heads: 4, layers: 1, feedForwardDimensions: 256)
        var g = RandomGenerator(seed: 90)
        let model = try CausalLanguageModel(configuration: c, generator: &g)
        let p = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.0, $0.1.value.scalars) })
        func maxAbs(_ name: String) -> Float { p[name]!.map { abs($0) }.max()! }
        let qkvBound = Float((1 / 2.0).squareRoot() * (6.0 / 128).squareRoot()), outBound = Float((6.0 / 128).squareRoot())
        for name in ["query", "key", "value"] {
            #expect(maxAbs("blocks.0.mixer.\(name).weight") <= qkvBound && maxAbs("blocks.0.mixer.\(name).weight") > 0.9 * qkvBound)
            #expect(maxAbs("blocks.0.mixer.\(name).bias") <= 1 / 8 && maxAbs("blocks.0.mixer.\(name).bias") > 0.05)
        }
        #expect(maxAbs("blocks.0.mixer.output.weight") <= outBound && maxAbs("blocks.0.mixer.output.weight") > 0.9 * outBound)
        #expect(maxAbs("blocks.0.mixer.output.bias") == 0)
        #expect(maxAbs("blocks.0.intermediate.weight") <= 1 / 8 && maxAbs("blocks.0.output.weight") <= 1 / 16 && maxAbs("blocks.0.output.weight") > 0.05)
        let embedding = p["embedding.weight"]!
        let variance = embedding.reduce(0) { $0 + Double($1 * $1) } / Double(embedding.count - 64)
        #expect(abs(variance - 1.0 / 64) < 0.1 / 64 && embedding[0..<64].allSatisfy { $0 == 0 })
    }

    @Test("LM: tied output has no separate projection; loss is finite and every parameter gets a gradient")
    func languageModelLoss() throws {
        for tied in [true, false] {
            let model = try Self.tinyLM(.causalPermuteFormer, tied: tied)
            #expect(model.namedParameters().contains { $0.0 == "outputProjection.weight" } == !tied)
            let ids = IntTensor(shape: [2, 7], scalars: [1, 10, 11, 12, 13, 14, 2, 1, 20, 21, 22, 2, 0, 0])
            let loss = try model.objective.nextTokenLoss(logits: model(ids), ids: ids)
            #expect(loss.value.scalar.isFinite && loss.value.scalar > 0)
            try loss.backward()
            for (name, p) in model.namedParameters() { #expect(p.grad != nil, "\(name)") }
        }
    }

    // MARK: Configurations

    @Test("presets build, and configurations round-trip through JSON")
    func presets() throws {
        for name in ["listops", "text", "retrieval", "image", "pathfinder", "tiny", "image-permuteFormer", "text-softmax", "text-ropePerformer"] {
            let c = try EncoderConfiguration.preset(name)
            try c.validate()
            let decoded = try JSONDecoder().decode(EncoderConfiguration.self, from: JSONEncoder().encode(c))
            #expect(decoded == c, "\(name)")
        }
        #expect(try EncoderConfiguration.preset("image").mixer.kind == .permuteFormer2D)
        #expect(try EncoderConfiguration.preset("text-softmax").positions == .learned)
        #expect(try EncoderConfiguration.preset("text").positions == EncoderConfiguration.Positions.none)
        #expect(try EncoderConfiguration.preset("text").mixer.featureMultiplier == 4)
        let lm = try LanguageModelConfiguration.preset("wikitext")
        #expect(lm.layers == 6 && lm.dimensions == 512 && lm.heads == 8 && lm.mixer.featureMultiplier == 1 && !lm.mixer.normalized && lm.tiedOutput)
        for name in ["tiny", "small", "small-causalPerformer", "tiny-causalDecayPerformer"] { try LanguageModelConfiguration.preset(name).validate() }
        // Sparse JSON configurations take the defaults.
        let encoder = try JSONDecoder().decode(EncoderConfiguration.self, from: Data(
            #"{"dimensions":32,"heads":2,"layers":1,"feedForwardDimensions":64,"mixer":{"kind":"softmax"}}"#.utf8))
        #expect(encoder.positions == .learned && encoder.vocabularySize == 259 && encoder.layerNormEpsilon == 1e-12)
        let lmSparse = try JSONDecoder().decode(LanguageModelConfiguration.self, from: Data(
            #"{"dimensions":32,"heads":2,"layers":1,"feedForwardDimensions":64}"#.utf8))
        #expect(lmSparse.mixer.kind == .causalPermuteFormer && lmSparse.tiedOutput && !lmSparse.mixer.normalized)
        let sparse = try JSONDecoder().decode(MixerConfiguration.self, from: Data(#"{"kind":"permuteFormer"}"#.utf8))
        #expect(sparse == MixerConfiguration(kind: .permuteFormer))
    }

    @Test("bad configurations throw errors naming the values")
    func badConfigurationsThrow() throws {
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "" } catch { return "\(error)" }
        }
        #expect(message { _ = try EncoderConfiguration.preset("nope") }.contains("nope"))
        #expect(message { _ = try EncoderConfiguration.preset("text-causalPermuteFormer") }.contains("causal"))
        #expect(message { _ = try LanguageModelConfiguration.preset("tiny-permuteFormer") }.contains("permuteFormer"))
        var c = try EncoderConfiguration.preset("tiny")
        c.heads = 3
        #expect(message { try c.validate() }.contains("width 32 is not divisible by 3 heads"))
        c = try EncoderConfiguration.preset("tiny-ropePerformer")
        c.dimensions = 6; c.heads = 2; c.mixer.featureMultiplier = 1
        #expect(message { try c.validate() }.contains("even feature width per head, got 3"))
        var lm = try LanguageModelConfiguration.preset("tiny")
        lm.mixer.decayRates = [0.5, 1.5]
        #expect(message { try lm.validate() }.contains("1.5 is outside (0, 1]"))
        lm.mixer.decayRates = [0, 0.5]
        #expect(message { try lm.validate() }.contains("r_0 = 0.0 is outside (0, 1]"))
        let model = try Self.tinyEncoder(.softmax)   // learned table of 12
        #expect(message { try model.check(.tokens(IntTensor(zeros: [1, 13]))) }.contains("sequence length 13 exceeds the learned position table of 12"))
        #expect(message { try model.check(.tokens(IntTensor(shape: [1, 2], scalars: [1, 25]))) }.contains("token id 25"))
    }

    static func stderrText(_ result: ExitTest.Result?) -> String {
        String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    }

    @Test("bad configurations stop with a message naming the values")
    func badConfigurationsExit() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var g = RandomGenerator(seed: 0)
            _ = SoftmaxAttention(dimensions: 10, heads: 3, generator: &g)
        }
        #expect(Self.stderrText(result).contains("width 10 is not divisible by 3 heads"))
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var g = RandomGenerator(seed: 0)
            _ = PermuteFormer2DAttention(dimensions: 6, heads: 2, featureMultiplier: 1, grid: ImageGrid(width: 2, height: 2), generator: &g)
        }
        #expect(Self.stderrText(result).contains("feature width per head 3"))
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var g = RandomGenerator(seed: 0)
            _ = RoPEPerformerAttention(dimensions: 6, heads: 2, featureMultiplier: 1, generator: &g)
        }
        #expect(Self.stderrText(result).contains("feature width per head 3"))
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var g = RandomGenerator(seed: 0)
            _ = OrthogonalFormerAttention(dimensions: 10, heads: 2, featureMultiplier: 1, generator: &g)
        }
        #expect(Self.stderrText(result).contains("feature width per head 5"))
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var g = RandomGenerator(seed: 0)
            _ = CausalPermuteFormerAttention(dimensions: 8, heads: 2, decay: [0.9, 1.25], generator: &g)
        }
        #expect(Self.stderrText(result).contains("r_1 = 1.25 is outside (0, 1]"))
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = EncoderConfiguration(vocabularySize: 10, dimensions: 8, heads: 2, layers: 1, feedForwardDimensions: 8,
                                         mixer: MixerConfiguration(kind: .softmax), positions: .learned, maxPositions: 4)
            var g = RandomGenerator(seed: 0)
            let model = try! EncoderClassifier(configuration: c, generator: &g)
            _ = model(.tokens(IntTensor(zeros: [1, 5])))
        }
        #expect(Self.stderrText(result).contains("sequence length 5 exceeds the learned position table of 4"))
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var g = RandomGenerator(seed: 0)
            let mixer = PermuteFormer2DAttention(dimensions: 8, heads: 2, grid: ImageGrid(width: 2, height: 2), generator: &g)
            _ = mixer(Variable(Tensor(zeros: [1, 5, 8])), keyMask: nil)
        }
        #expect(Self.stderrText(result).contains("sequence length 5 ≠ prefix 1 + width 2 × height 2 + suffix 1 = 6"))
    }
}
