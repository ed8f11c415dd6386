import Foundation
import Testing
import LongMixerTestSupport
import LongMixerData
@testable import LongMixerModels
import LongMixerCore
import LongMixerNN
import LongMixerTraining

/// The encoder's extensions for the synthetic tasks: real-valued input, the regression head, mean
/// and flatten pooling (parity with PyTorch is in `AttentionParityTests`); configurations written
/// before them still decode to the same model; the invalid combinations are refused.
@Suite("EncoderExtensions")
struct EncoderExtensionTests {
    static func tiny(_ kind: MixerKind = .performer, inputFeatures: Int? = nil, positions: EncoderConfiguration.Positions = .none,
                     head: EncoderConfiguration.Head = .classification, pooling: EncoderConfiguration.Pooling = .cls,
                     length: Int? = nil, outputs: Int = 1) -> EncoderConfiguration {
        EncoderConfiguration(vocabularySize: 10, inputFeatures: inputFeatures, dimensions: 8, heads: 2, layers: 1, feedForwardDimensions: 8,
                             dropout: 0, mixer: MixerConfiguration(kind: kind), positions: positions, maxPositions: 8, head: head,
                             classes: 3, outputs: outputs, pooling: pooling, length: length)
    }

    static func model(_ c: EncoderConfiguration, seed: UInt64 = 1) throws -> EncoderClassifier {
        var g = RandomGenerator(seed: seed)
        let m = try EncoderClassifier(configuration: c, generator: &g)
        m.eval()
        return m
    }

    static func features(_ shape: [Int], seed: UInt64) -> Tensor {
        var g = RandomGenerator(seed: seed)
        return Tensor.uniform(shape, low: -1, high: 1, generator: &g)
    }

    /// Weights at a scale where every part of the model matters (the N(0, 0.02) init is nearly linear).
    static func scramble(_ model: Module, seed: UInt64) {
        var g = RandomGenerator(seed: seed)
        for (name, p) in model.namedParameters() {
            var value = Tensor.uniform(p.shape, low: -0.6, high: 0.6, generator: &g)
            if name.hasSuffix("Norm.weight") { value = Tensor(shape: value.shape, scalars: value.scalars.map { 1 + $0 / 3 }) }
            if name == "embedding.weight" {     // keep the PAD row at zero
                for j in 0..<p.shape[1] { value[flat: j] = 0 }
            }
            p.value = value
        }
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch { return "\(error)" }
    }

    // MARK: Backward compatibility

    /// A configuration as `JSONEncoder` wrote it before `inputFeatures`, `outputs`, `pooling` and `length` existed.
    static let oldJSON = #"""
    {"classes":3,"dimensions":16,"dropout":0.1,"feedForwardDimensions":24,"head":"classification","heads":2,
     "initializerRange":0.019999999552965164,"layerNormEpsilon":9.9999999600419720e-13,"layers":2,"maxPositions":12,
     "mixer":{"attentionDropout":0,"chunkSize":64,"featureMultiplier":4,"featureSeed":16384001,"kernelEpsilon":0.0010000000474974513,
              "kind":"performer","normalized":false,"permutationSeed":16045690984833335023,"ropeBase":10000},
     "paddingIndex":0,"positions":"learned","vocabularySize":20}
    """#

    @Test("a configuration written before the extensions decodes to the same token/CLS model")
    func oldConfigurationDecodes() throws {
        let decoded = try JSONDecoder().decode(EncoderConfiguration.self, from: Data(Self.oldJSON.utf8))
        let expected = EncoderConfiguration(vocabularySize: 20, dimensions: 16, heads: 2, layers: 2, feedForwardDimensions: 24, dropout: 0.1,
                                            mixer: MixerConfiguration(kind: .performer), positions: .learned, maxPositions: 12,
                                            head: .classification, classes: 3)
        #expect(decoded == expected)
        #expect(decoded.inputFeatures == nil && decoded.pooling == .cls && decoded.length == nil && decoded.outputs == 1)
        #expect(decoded.outputCount == 3 && decoded.headInputWidth == 16)
        let a = try Self.model(decoded, seed: 5), b = try Self.model(expected, seed: 5)
        // The parameter layout of the reference (and of every existing checkpoint and fixture).
        let names = a.namedParameters().map(\.0)
        #expect(names.prefix(5) == ["embedding.weight", "tokenTypeEmbedding.weight", "positionEmbedding.weight", "embeddingNorm.weight", "embeddingNorm.bias"])
        #expect(names.suffix(4) == ["pooler.weight", "pooler.bias", "head.weight", "head.bias"])
        #expect(a.namedParameters().first { $0.0 == "head.weight" }!.1.shape == [3, 16])
        for ((na, pa), (nb, pb)) in zip(a.namedParameters(), b.namedParameters()) {
            #expect(na == nb && pa.value.scalars == pb.value.scalars, "\(na)")
        }
        // Re-encoding adds the new keys with their defaults, and reads back equal.
        let reencoded = try JSONDecoder().decode(EncoderConfiguration.self, from: JSONEncoder().encode(decoded))
        #expect(reencoded == decoded)
    }

    @Test("the new fields round-trip through JSON; a sparse JSON takes their defaults")
    func newFieldsRoundTrip() throws {
        let c = Self.tiny(.permuteFormer, inputFeatures: 2, head: .regression, pooling: .flatten, length: 6, outputs: 2)
        let data = try JSONEncoder().encode(c)
        #expect(try JSONDecoder().decode(EncoderConfiguration.self, from: data) == c)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains(#""pooling":"flatten""#) && text.contains(#""inputFeatures":2"#) && text.contains(#""length":6"#))
        let sparse = try JSONDecoder().decode(EncoderConfiguration.self, from: Data(
            #"{"dimensions":8,"heads":2,"layers":1,"feedForwardDimensions":8,"mixer":{"kind":"performer"},"pooling":"mean","head":"regression"}"#.utf8))
        #expect(sparse.pooling == .mean && sparse.head == .regression && sparse.outputs == 1 && sparse.inputFeatures == nil && sparse.length == nil)
    }

    // MARK: Structure

    @Test("feature input: Linear(F, D) replaces the word embedding; flatten: no pooler, head Linear(N·D, C)")
    func featureFlattenLayout() throws {
        let model = try Self.model(Self.tiny(.permuteFormer, inputFeatures: 2, head: .regression, pooling: .flatten, length: 6, outputs: 2))
        let shapes = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.0, $0.1.shape) })
        #expect(model.namedParameters().first?.0 == "inputProjection.weight")
        #expect(shapes["inputProjection.weight"] == [8, 2] && shapes["inputProjection.bias"] == [8])
        #expect(shapes["embedding.weight"] == nil && shapes["pooler.weight"] == nil)
        #expect(shapes["head.weight"] == [2, 48] && shapes["tokenTypeEmbedding.weight"] == [1, 8])
        #expect(model.outputCount == 2)
        let out = model(.features(Self.features([3, 6, 2], seed: 2)))
        #expect(out.shape == [3, 2] && out.value.scalars.allSatisfy { $0.isFinite })
        // Mean pooling keeps the pooler; the regression head reads D values.
        let mean = try Self.model(Self.tiny(inputFeatures: 3, head: .regression, pooling: .mean, outputs: 4))
        #expect(mean.namedParameters().suffix(4).map(\.0) == ["pooler.weight", "pooler.bias", "head.weight", "head.bias"])
        #expect(mean(.features(Self.features([2, 5, 3], seed: 3))).shape == [2, 4])
    }

    @Test("one-hot features through a projection equal to the embedding table ≡ the token model (the rest of the embedding stage is shared)")
    func oneHotFeaturesMatchTokens() throws {
        for pooling in [EncoderConfiguration.Pooling.cls, .mean, .flatten] {
            let tokens = try Self.model(Self.tiny(positions: .learned, pooling: pooling, length: 5))
            let features = try Self.model(Self.tiny(inputFeatures: 10, positions: .learned, pooling: pooling, length: 5), seed: 9)
            Self.scramble(tokens, seed: 4)
            let values = Dictionary(uniqueKeysWithValues: tokens.namedParameters().map { ($0.0, $0.1.value) })
            for (name, p) in features.namedParameters() {
                switch name {
                case "inputProjection.weight": p.value = values["embedding.weight"]!.transposed(0, 1)
                case "inputProjection.bias": p.value = Tensor(zeros: p.shape)
                default: p.value = values[name]!
                }
            }
            let ids: [Int32] = [1, 4, 9, 3, 7, 2, 8, 5, 6, 1]          // no PAD (0): the token model has no mask either
            var oneHot = Tensor(zeros: [2, 5, 10])
            for (i, id) in ids.enumerated() { oneHot[flat: i * 10 + Int(id)] = 1 }
            let a = tokens(.tokens(IntTensor(shape: [2, 5], scalars: ids))).value
            let b = features(.features(oneHot)).value
            expectClose(b, a, tolerance: 1e-5, "\(pooling)")
        }
    }

    @Test("mean pooling averages over non-padding positions: appending PAD leaves a Performer-family encoder unchanged")
    func meanPoolingIgnoresPadding() throws {
        for kind in [MixerKind.softmax, .performer, .permuteFormer] {
            let model = try Self.model(Self.tiny(kind, pooling: .mean))
            Self.scramble(model, seed: 6)
            let short = model(.tokens(IntTensor(shape: [1, 4], scalars: [1, 5, 7, 2]))).value
            let padded = model(.tokens(IntTensor(shape: [1, 7], scalars: [1, 5, 7, 2, 0, 0, 0]))).value
            expectClose(padded, short, tolerance: 1e-5, "\(kind)")
            // …and it is the mean, not position 0: changing a later token changes the output.
            let other = model(.tokens(IntTensor(shape: [1, 4], scalars: [1, 5, 7, 3]))).value
            #expect(abs(other[flat: 0] - short[flat: 0]) + abs(other[flat: 1] - short[flat: 1]) > 1e-6, "\(kind)")
        }
        // Equal to tanh(Dense(mean)) computed by hand from the hidden states.
        let model = try Self.model(Self.tiny(pooling: .mean))
        Self.scramble(model, seed: 7)
        let ids = IntTensor(shape: [2, 4], scalars: [1, 5, 7, 2, 1, 6, 0, 0])
        let h = model.encode(ids).value
        var manual = Tensor(zeros: [2, 8])
        for (r, count) in [(0, 4), (1, 2)] {
            for t in 0..<count { for j in 0..<8 { manual[flat: r * 8 + j] += h[flat: (r * 4 + t) * 8 + j] / Float(count) } }
        }
        expectClose(model.pooled(ids).value, tanh(model.pooler!(Variable(manual))).value, tolerance: 1e-6, "manual mean")
    }

    @Test("retrieval with mean pooling: both documents pooled alone, MLP on [p1, p2]")
    func retrievalMeanPooling() throws {
        let model = try Self.model(Self.tiny(head: .retrieval, pooling: .mean))
        Self.scramble(model, seed: 8)
        let out = model(.tokens(IntTensor(shape: [1, 10], scalars: [1, 5, 7, 2, 0, 1, 4, 9, 3, 2])))
        let p1 = model.pooled(IntTensor(shape: [1, 5], scalars: [1, 5, 7, 2, 0]))
        let p2 = model.pooled(IntTensor(shape: [1, 5], scalars: [1, 4, 9, 3, 2]))
        expectClose(out.value, (model.head as! Sequential)(concatenate([p1, p2], axis: 1)).value, tolerance: 1e-6, "retrieval")
    }

    // MARK: Gradients

    /// Softmax attention keeps the whole model smooth (exact GELU, LayerNorm, tanh), so central
    /// differences are exact to O(h²) everywhere; the ReLU kernels of the Performer family have kinks
    /// that a step can straddle (each mixer's own pullback is checked in `AttentionPropertyTests`).
    @Test("finite-difference gradients of every parameter through the new input, pooling and head paths",
          arguments: ["features-flatten-regression", "tokens-mean-classification", "features-learned-mean-regression", "tokens-retrieval-mean"])
    func finiteDifferenceGradients(path: String) throws {
        let c: EncoderConfiguration, input: SequenceInput
        switch path {
        case "features-flatten-regression":
            c = Self.tiny(.softmax, inputFeatures: 2, head: .regression, pooling: .flatten, length: 5)
            input = .features(Self.features([2, 5, 2], seed: 11))
        case "tokens-mean-classification":
            c = Self.tiny(.softmax, positions: .sinusoidal, pooling: .mean)
            input = .tokens(IntTensor(shape: [2, 5], scalars: [1, 5, 7, 9, 2, 1, 4, 2, 0, 0]))
        case "features-learned-mean-regression":
            c = Self.tiny(.softmax, inputFeatures: 3, positions: .learned, head: .regression, pooling: .mean, outputs: 2)
            input = .features(Self.features([2, 4, 3], seed: 12))
        default:
            c = Self.tiny(.softmax, head: .retrieval, pooling: .mean)
            input = .tokens(IntTensor(shape: [1, 8], scalars: [1, 5, 7, 0, 1, 4, 9, 2]))
        }
        let model = try Self.model(c)
        Self.scramble(model, seed: 13)
        let parameters = model.namedParameters()
        let result = checkGradients(parameters.map { $0.1 as Variable }, step: 1e-2, absoluteTolerance: 3e-3, relativeTolerance: 3e-3) { _ in model(input) }
        let worst = result.worst.map { parameters[$0.input].0 } ?? "-"
        #expect(result.passed, "\(path): \(result) (worst in \(worst))")
    }

    // MARK: Invalid combinations

    @Test("invalid combinations are refused by validate() with a message naming the values")
    func invalidCombinations() throws {
        func refusal(_ c: EncoderConfiguration) -> String { Self.message { try c.validate() } }
        #expect(refusal(Self.tiny(head: .retrieval, pooling: .flatten, length: 4)).contains("the retrieval head needs cls or mean pooling"))
        #expect(refusal(Self.tiny(pooling: .flatten)).contains("needs a fixed length N; set length"))
        #expect(refusal(Self.tiny(inputFeatures: 2, head: .retrieval)).contains("cannot take real-valued features"))
        #expect(refusal(Self.tiny(inputFeatures: 0)).contains("inputFeatures must be ≥ 1"))
        #expect(refusal(Self.tiny(head: .regression, outputs: 0)).contains("regression head needs ≥ 1 outputs, got 0"))
        #expect(refusal(Self.tiny(positions: .learned, pooling: .flatten, length: 9)).contains("length 9 exceeds the learned position table of 8"))
        #expect(refusal(Self.tiny(length: 0)).contains("length must be ≥ 1"))
        var grid = Self.tiny(.permuteFormer2D, pooling: .flatten, length: 5)
        grid.mixer.grid = ImageGrid(width: 2, height: 2)
        #expect(refusal(grid).contains("length 5 ≠ the 2D PermuteFormer grid"))
        // Feature input ignores the token fields (a vocabulary of 1 with PAD 0 would be nonsense for tokens).
        var features = Self.tiny(inputFeatures: 2)
        features.vocabularySize = 1; features.paddingIndex = 5
        try features.validate()
        // Every other combination of head, pooling and input kind builds.
        for head in EncoderConfiguration.Head.allCases {
            for pooling in EncoderConfiguration.Pooling.allCases {
                for f in [nil, 2] as [Int?] where !(head == .retrieval && (pooling == .flatten || f != nil)) {
                    let c = Self.tiny(inputFeatures: f, head: head, pooling: pooling, length: 4)
                    #expect(refusal(c) == "", "\(head) \(pooling) \(String(describing: f))")
                    #expect(try Self.model(c).outputCount == (head == .classification ? 3 : 1))
                }
            }
        }
    }

    @Test("inputs that do not fit the configuration are refused by check(_:)")
    func badInputs() throws {
        let features = try Self.model(Self.tiny(inputFeatures: 2, pooling: .flatten, length: 4))
        #expect(Self.message { try features.check(.tokens(IntTensor(zeros: [1, 4]))) }.contains("reads real-valued features [B, N, 2]"))
        #expect(Self.message { try features.check(.features(Tensor(zeros: [1, 4, 3]))) }.contains("3 features per position ≠ the encoder's inputFeatures 2"))
        #expect(Self.message { try features.check(.features(Tensor(zeros: [1, 5, 2]))) }.contains("sequence length 5 ≠ the encoder's fixed length 4 (flatten pooling)"))
        #expect(Self.message { try features.check(.features(Tensor(zeros: [4, 2]))) }.contains("must be a non-empty [B, N, 2]"))
        try features.check(.features(Tensor(zeros: [3, 4, 2])))
        let tokens = try Self.model(Self.tiny())
        #expect(Self.message { try tokens.check(.features(Tensor(zeros: [1, 4, 2]))) }.contains("set inputFeatures"))
    }
}

/// Opt-in end-to-end checks (`LONGMIXER_SLOW_TESTS=1 swift test --filter Slow`): the encoder learns
/// the synthetic tasks at N = 16 through the new paths (features + regression, flatten pooling).
@Suite("SlowEncoderTasks", .enabled(if: ProcessInfo.processInfo.environment["LONGMIXER_SLOW_TESTS"] == "1"))
struct SlowEncoderTaskTests {
    static func configuration(_ task: SyntheticTask, kind: MixerKind) -> EncoderConfiguration {
        // Temporal Order's ids 0..<6 are all real symbols: PAD gets the unused id 6.
        EncoderConfiguration(vocabularySize: 7, inputFeatures: task.inputFeatures, dimensions: 32, heads: 2, layers: 2,
                             feedForwardDimensions: 64, dropout: 0, mixer: MixerConfiguration(kind: kind), maxPositions: 16,
                             head: task == .adding ? .regression : .classification, classes: 4, pooling: .flatten, length: 16,
                             paddingIndex: 6)
    }

    @Test("Adding (features → regression, flatten) and Temporal Order (tokens → 4 classes, flatten) at N = 16",
          arguments: [SyntheticTask.adding, .order], [MixerKind.softmax, .permuteFormer])
    func learnsSyntheticTask(task: SyntheticTask, kind: MixerKind) throws {
        var g = RandomGenerator(seed: 21)
        let model = try EncoderClassifier(configuration: Self.configuration(task, kind: kind), generator: &g)
        let optimizer = Adam(parameters: model.parameters(), learningRate: 1e-3)
        let train = try SyntheticDataset(task: task, length: 16, split: .train, count: 32 * 600, seed: 3)
        let validation = try SyntheticDataset(task: task, length: 16, split: .validation, count: 512, seed: 3)
        func loss(_ out: Variable, _ targets: Targets) -> Variable {
            switch targets {
            case .values(let v): return meanSquaredError(out, Variable(v))
            case .classes(let c): return crossEntropy(logits: out, targets: c)
            case .tokens: fatalError("no token targets here")
            }
        }
        for step in 0..<train.batchCount(size: 32) {
            let batch = train.batch(at: step, size: 32)
            optimizer.zeroGradients()
            try loss(model(batch.input), batch.targets).backward()
            optimizer.step()
        }
        model.eval()
        let batch = validation.batch(at: 0, size: 512)
        let out = model(batch.input).value
        var correct = 0
        switch batch.targets {
        case .values(let v):
            for r in 0..<512 where abs(out[flat: r] - v[flat: r]) < 0.04 { correct += 1 }
        case .classes(let c):
            for r in 0..<512 {
                let row = (0..<4).map { out[flat: 4 * r + $0] }
                if row.firstIndex(of: row.max()!) == Int(c.scalars[r]) { correct += 1 }
            }
        case .tokens: break
        }
        let accuracy = Double(correct) / 512
        print("\(task.rawValue) \(kind.rawValue): validation loss \(loss(model(batch.input), batch.targets).value.scalar), accuracy \(accuracy)")
        #expect(accuracy > 0.9, "\(task.rawValue) \(kind.rawValue): accuracy \(accuracy)")
    }
}
