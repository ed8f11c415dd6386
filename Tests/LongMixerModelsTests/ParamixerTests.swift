import Foundation
import Testing
@testable import LongMixerModels
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerTraining
import LongMixerTestSupport

@Suite("ParamixerProtocols")
struct ParamixerProtocolTests {
    @Test("factor counts: ceil and floor rules, powers of two and not")
    func factorCounts() throws {
        #expect(try LinkProtocols.factorCount(length: 8) == 3)
        #expect(try LinkProtocols.factorCount(length: 1024) == 10)
        #expect(try LinkProtocols.factorCount(length: 1999) == 11)
        #expect(try LinkProtocols.factorCount(length: 4097) == 13)
        #expect(try LinkProtocols.factorCount(length: 16384) == 14)
        #expect(try LinkProtocols.factorCount(length: 16385, rule: .floor) == 14)
        #expect(try LinkProtocols.factorCount(length: 16385, rule: .ceil) == 15)
        #expect(try LinkProtocols.factorCount(length: 2) == 1)
        #expect(try LinkProtocols.factorCount(length: 3) == 2)
        #expect(try LinkProtocols.factorCount(length: 3, rule: .floor) == 1)
        #expect(try LinkProtocols.factorCount(length: 37) == 6)
        #expect(try LinkProtocols.factorCount(length: 37, rule: .floor) == 5)
    }

    @Test("CHORD worked values (paramixer.md §1.2)")
    func chordValues() throws {
        #expect(try LinkProtocols.columns(.chord, length: 8, factor: 0, row: 0) == [0, 1, 2, 4])
        #expect(try LinkProtocols.columns(.chord, length: 8, factor: 2, row: 5) == [5, 6, 7, 1])
        let n1024 = try LinkProtocols.offsets(.chord, length: 1024, factor: 0)
        #expect(n1024 == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
        #expect(try LinkProtocols.offsetTable(.chord, length: 1024).count == 10)
        let n1999 = try LinkProtocols.offsets(.chord, length: 1999, factor: 3)
        #expect(n1999.count == 12 && n1999.last == 1024)
        let n4097 = try LinkProtocols.offsets(.chord, length: 4097, factor: 0)
        #expect(n4097.count == 14 && n4097.last == 4096)
        #expect(try LinkProtocols.columns(.chord, length: 4097, factor: 0, row: 7).last == 6)   // 4096 ≡ −1
        let table16385 = try LinkProtocols.offsetTable(.chord, length: 16385, rule: .floor)
        #expect(table16385.count == 14 && table16385[0].count == 15 && table16385[0].last == 8192)
        #expect(try LinkProtocols.linkCount(.chord, length: 16384) == 15)
        // N not a power of two: every factor has the same offsets, all inside 0..<N.
        let t37 = try LinkProtocols.offsetTable(.chord, length: 37)
        #expect(t37.count == 6 && t37.allSatisfy { $0 == [0, 1, 2, 4, 8, 16, 32] })
    }

    @Test("CDIL worked values with duplicates kept (paramixer.md §1.3 and §7)")
    func cdilValues() throws {
        #expect(try LinkProtocols.columns(.cdil, length: 8, factor: 0, row: 0) == [0, 1, 2, 3, 4, 7, 6, 5, 4])
        #expect(try LinkProtocols.columns(.cdil, length: 8, factor: 1, row: 0) == [0, 2, 4, 6, 0, 6, 4, 2, 0])
        #expect(try LinkProtocols.columns(.cdil, length: 8, factor: 2, row: 0) == [0, 4, 0, 4, 0, 4, 0, 4, 0])
        #expect(try LinkProtocols.offsetTable(.cdil, length: 8).count == 3)
        #expect(try LinkProtocols.linkCount(.cdil, length: 1024) == 9)
        // N = 13 (not a power of two), factor 3 (d = 8): ±8k mod 13.
        #expect(try LinkProtocols.offsets(.cdil, length: 13, factor: 3) == [0, 8, 3, 11, 6, 5, 10, 2, 7])
        #expect(try LinkProtocols.columns(.cdil, length: 13, factor: 1, row: 12) == [12, 1, 3, 5, 7, 10, 8, 6, 4])
        for m in 0..<10 {
            let off = try LinkProtocols.offsets(.cdil, length: 1024, factor: m)
            #expect(off.count == 9 && off.allSatisfy { $0 >= 0 && $0 < 1024 })
        }
    }

    @Test("bad lengths, factors and protocol names give clear errors")
    func errors() {
        #expect(throws: ParamixerError.lengthTooShort(1)) { try LinkProtocols.factorCount(length: 1) }
        #expect(throws: ParamixerError.lengthTooShort(0)) { try LinkProtocols.offsetTable(.cdil, length: 0) }
        #expect(throws: ParamixerError.factorOutOfRange(factor: 3, factorCount: 3)) { try LinkProtocols.offsets(.chord, length: 8, factor: 3) }
        #expect(throws: ParamixerError.unknownProtocol("dilated")) { try LinkProtocol(parsing: "dilated") }
        #expect(ParamixerError.unknownProtocol("dilated").description.contains("chord, cdil"))
        #expect(ParamixerError.lengthTooShort(1).description.contains("N = 1"))
        #expect((try? LinkProtocol(parsing: "CHORD")) == .chord)
        #expect((try? LinkProtocol(parsing: "dil")) == .cdil)
    }
}

@Suite("ParamixerModel")
struct ParamixerModelTests {
    static func tinyConfiguration(_ transform: (inout ParamixerConfiguration) -> Void = { _ in }) -> ParamixerConfiguration {
        var c = ParamixerConfiguration(vocabularySize: 10, length: 16, embeddingSize: 8, hiddenSize: 8, blocks: 2,
                                       linkProtocol: .cdil, positionalEmbedding: true, paddingIndex: 8, outputCount: 3)
        transform(&c)
        return c
    }

    @Test("parameter names match the PyTorch reference module")
    func parameterNames() throws {
        var gen = RandomGenerator(seed: 1)
        let model = try Paramixer(configuration: Self.tinyConfiguration(), generator: &gen)
        let names = model.namedParameters().map(\.0)
        #expect(names.contains("embedding.weight"))
        #expect(names.contains("apc_embedding.weight"))
        #expect(names.contains("attention.0.g.0.weight") && names.contains("attention.0.g.2.bias"))
        #expect(names.contains("attention.1.fs.3.2.bias"))
        #expect(names.contains("final.weight") && names.contains("final.bias"))
        #expect(!names.contains { $0.contains("dropout") })
        // 1 + 1 embeddings, 2 blocks × (g: 4 + 4 factors × 4), final: 2.
        #expect(names.count == 2 + 2 * (4 + 4 * 4) + 2)
        let shapes = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.0, $0.1.shape) })
        #expect(shapes["attention.0.fs.0.2.weight"] == [9, 8])
        #expect(shapes["final.weight"] == [3, 16 * 8])
        var featureGen = RandomGenerator(seed: 2)
        let adding = try Paramixer(configuration: ParamixerConfiguration(inputFeatures: 2, length: 16, outputCount: 1), generator: &featureGen)
        #expect(adding.namedParameters().map(\.0).prefix(2) == ["init_linear.weight", "init_linear.bias"])
    }

    @Test("parameter totals of the paper's configurations (paramixer.md §3; APC on)")
    func parameterTotals() throws {
        var gen = RandomGenerator(seed: 3)
        // LRA Image: V 256, N 1024, D 32, H 32, 1 block, APC, FLATTEN, 10 classes.
        let image = try Paramixer(configuration: ParamixerConfiguration(vocabularySize: 256, length: 1024, embeddingSize: 32, hiddenSize: 32,
                                                                        positionalEmbedding: true, outputCount: 10), generator: &gen)
        #expect(image.parameterCount == 384_952)
        #expect(image.factorCount == 10 && image.linkCount == 11)
        // Pathfinder: V 225, N 1024, D 64, H 32, 2 classes.
        let pathfinder = try Paramixer(configuration: ParamixerConfiguration(vocabularySize: 225, length: 1024, embeddingSize: 64, hiddenSize: 32,
                                                                             positionalEmbedding: true, outputCount: 2), generator: &gen)
        #expect(pathfinder.parameterCount == 239_632)
    }

    @Test("configuration validation names the offending values")
    func validation() {
        func message(_ c: ParamixerConfiguration) -> String {
            do { try c.validate(); return "" } catch { return "\(error)" }
        }
        #expect(message(Self.tinyConfiguration()) == "")
        #expect(message(Self.tinyConfiguration { $0.length = 1 }).contains("N = 1"))
        #expect(message(Self.tinyConfiguration { $0.inputFeatures = 2 }).contains("both set"))
        #expect(message(Self.tinyConfiguration { $0.vocabularySize = nil; $0.paddingIndex = nil }).contains("either vocabularySize"))
        #expect(message(Self.tinyConfiguration { $0.paddingIndex = 10 }).contains("paddingIndex 10 is outside the vocabulary 0..<10"))
        #expect(message(Self.tinyConfiguration { $0.dropout1 = 1 }).contains("dropout1 must be in [0, 1), got 1"))
        #expect(message(Self.tinyConfiguration { $0.blocks = 0 }).contains("blocks must be ≥ 1, got 0"))
        #expect(message(Self.tinyConfiguration { $0.embeddingSize = 0 }).contains("embeddingSize (D) must be ≥ 1, got 0"))
        var gen = RandomGenerator(seed: 4)
        #expect(throws: ParamixerError.lengthTooShort(1)) { try Paramixer(configuration: Self.tinyConfiguration { $0.length = 1 }, generator: &gen) }
    }

    @Test("the configuration round-trips through JSON")
    func codable() throws {
        let c = Self.tinyConfiguration { $0.pooling = .cls; $0.factorCountRule = .floor }
        let data = try JSONEncoder().encode(c)
        #expect(try JSONDecoder().decode(ParamixerConfiguration.self, from: data) == c)
    }

    @Test("a configuration file with an unknown protocol names it")
    func unknownProtocolInJSON() throws {
        var json = String(decoding: try JSONEncoder().encode(Self.tinyConfiguration()), as: UTF8.self)
        json = json.replacingOccurrences(of: "\"cdil\"", with: "\"dilated\"")
        #expect(throws: ParamixerError.unknownProtocol("dilated")) {
            try JSONDecoder().decode(ParamixerConfiguration.self, from: Data(json.utf8))
        }
    }

    /// Rolls [B, N, D] by `shift` along the sequence: result[:, i] = x[:, (i − shift) mod N].
    static func roll(_ x: Tensor, by shift: Int) -> Tensor {
        let (b, n, d) = (x.shape[0], x.shape[1], x.shape[2])
        var y = Tensor(zeros: x.shape)
        for bi in 0..<b { for i in 0..<n { for c in 0..<d {
            y[flat: (bi * n + i) * d + c] = x[flat: (bi * n + ((i - shift) % n + n) % n) * d + c]
        } } }
        return y
    }

    @Test("a block is equivariant to circular shifts of its inputs (offsets are relative, weights per row)",
          arguments: [LinkProtocol.chord, .cdil])
    func blockShiftEquivariance(linkProtocol: LinkProtocol) throws {
        var gen = RandomGenerator(seed: 21)
        let n = 13, d = 4
        let block = ParamixerBlock(embeddingSize: d, hiddenSize: 5, offsets: try LinkProtocols.offsetTable(linkProtocol, length: n),
                                   dropout2: 0, generator: &gen)
        let v = Tensor.normal([2, n, d], generator: &gen), data = Tensor.normal([2, n, d], generator: &gen)
        let y = block(Variable(v), data: Variable(data)).value
        let yShifted = block(Variable(Self.roll(v, by: 5)), data: Variable(Self.roll(data, by: 5))).value
        let expected = Self.roll(y, by: 5)
        var worst: Float = 0
        for i in 0..<y.count { worst = max(worst, abs(yShifted[flat: i] - expected[flat: i])) }
        #expect(worst < 1e-4, "max deviation \(worst)")
        // …and is not invariant: the output does move with the input.
        var moved: Float = 0
        for i in 0..<y.count { moved = max(moved, abs(yShifted[flat: i] - y[flat: i])) }
        #expect(moved > 1e-2)
    }

    @Test("inputs of the wrong length, vocabulary or kind are rejected with their values")
    func inputChecks() throws {
        var gen = RandomGenerator(seed: 5)
        let model = try Paramixer(configuration: Self.tinyConfiguration(), generator: &gen)
        func message(_ input: SequenceInput) -> String {
            do { try model.check(input); return "" } catch { return "\(error)" }
        }
        #expect(message(.tokens(IntTensor(zeros: [2, 16]))) == "")
        #expect(message(.tokens(IntTensor(zeros: [2, 15]))).contains("sequence length 15 ≠ the model's N = 16"))
        #expect(message(.tokens(IntTensor(zeros: [16]))).contains("token ids must be [B, N], got shape [16]"))
        #expect(message(.features(Tensor(zeros: [16, 2]))).contains("reads token ids"))
        var ids = IntTensor(zeros: [2, 16])
        ids.scalars[16 + 5] = 10
        #expect(message(.tokens(ids)).contains("token id 10 at batch 1, position 5 is outside the vocabulary 0..<10"))
        ids.scalars[16 + 5] = -1
        #expect(message(.tokens(ids)).contains("token id -1"))
        #expect(message(.features(Tensor(zeros: [2, 16, 2]))).contains("reads token ids"))
        var featureGen = RandomGenerator(seed: 6)
        let adding = try Paramixer(configuration: ParamixerConfiguration(inputFeatures: 2, length: 16, outputCount: 1), generator: &featureGen)
        #expect(message2(adding, .features(Tensor(zeros: [2, 16, 3]))).contains("3 features per position ≠ the model's F = 2"))
        #expect(message2(adding, .tokens(IntTensor(zeros: [2, 16]))).contains("real-valued features"))
    }

    private func message2(_ model: Paramixer, _ input: SequenceInput) -> String {
        do { try model.check(input); return "" } catch { return "\(error)" }
    }

    @Test("calling the model on a bad input stops with the message")
    func callStopsOnBadInput() async {
        await #expect(processExitsWith: .failure) {
            var gen = RandomGenerator(seed: 7)
            let model = try! Paramixer(configuration: ParamixerModelTests.tinyConfiguration(), generator: &gen)
            _ = model(.tokens(IntTensor(zeros: [1, 12])))
        }
    }

    @Test("the smallest lengths work: N = 2 and N = 3, both protocols, both poolings, batch 1",
          arguments: [2, 3])
    func smallestLengths(n: Int) throws {
        for linkProtocol in LinkProtocol.allCases {
            for pooling in ParamixerConfiguration.Pooling.allCases {
                var gen = RandomGenerator(seed: UInt64(n))
                let model = try Paramixer(configuration: ParamixerConfiguration(vocabularySize: 4, length: n, embeddingSize: 5, hiddenSize: 3,
                                                                                linkProtocol: linkProtocol, pooling: pooling, outputCount: 2),
                                          generator: &gen)
                let logits = model(.tokens(IntTensor(shape: [1, n], scalars: (0..<n).map { Int32($0 % 4) })))
                #expect(logits.shape == [1, 2])
                #expect(logits.value.scalars.allSatisfy { $0.isFinite })
                try crossEntropy(logits: logits, targets: IntTensor([1])).backward()
                #expect(model.parameters().allSatisfy { $0.grad != nil })
            }
        }
    }

    @Test("forward shapes; dropout is off in eval mode and active in training")
    func forwardAndDropout() throws {
        var gen = RandomGenerator(seed: 8)
        let model = try Paramixer(configuration: Self.tinyConfiguration { $0.dropout1 = 0.5; $0.dropout2 = 0.5; $0.pooling = .cls },
                                  generator: &gen)
        var ids = IntTensor(zeros: [3, 16])
        for i in 0..<ids.count { ids.scalars[i] = Int32(i % 10) }
        model.eval()
        let a = model(.tokens(ids)).value, b = model(.tokens(ids)).value
        #expect(a.shape == [3, 3])
        #expect(a.scalars == b.scalars)
        model.train()
        let c = model(.tokens(ids)).value, d = model(.tokens(ids)).value
        #expect(c.scalars != d.scalars)
    }
}

/// The fused inference path of the blocks (`sparseFactorMLPForward` under `withoutGradient`) against the
/// autodiff forward of the same model.
@Suite("Paramixer fused inference")
struct ParamixerFusedInferenceTests {
    @Test("withoutGradient forward with fused factors equals the autodiff forward (CHORD and CDIL, both residuals, both poolings)",
          arguments: [(LinkProtocol.chord, 16, ParamixerConfiguration.Residual.everyFactor, ParamixerConfiguration.Pooling.flatten, 1),
                      (.chord, 37, .blockInput, .cls, 2), (.cdil, 16, .everyFactor, .cls, 2), (.cdil, 37, .blockInput, .flatten, 1),
                      (.chord, 256, .everyFactor, .flatten, 1), (.cdil, 300, .everyFactor, .cls, 1)])
    func matchesAutodiff(_ c: (LinkProtocol, Int, ParamixerConfiguration.Residual, ParamixerConfiguration.Pooling, Int)) throws {
        let (link, n, residual, pooling, blocks) = c
        var g = RandomGenerator(seed: UInt64(n))
        let configuration = ParamixerConfiguration(vocabularySize: 11, length: n, embeddingSize: 12, hiddenSize: 20, blocks: blocks,
                                                   linkProtocol: link, pooling: pooling, positionalEmbedding: true,
                                                   outputCount: 3, residual: residual)
        let model = try Paramixer(configuration: configuration, generator: &g)
        model.train(false)
        let ids = IntTensor(shape: [3, n], scalars: (0..<(3 * n)).map { _ in Int32(g.nextInt(below: 11)) })
        let autodiff = model(.tokens(ids), fusedInference: false).value     // records the graph: composed ops
        let fused = withoutGradient { model(.tokens(ids), fusedInference: true).value }
        let composed = withoutGradient { model(.tokens(ids), fusedInference: false).value }
        #expect((0..<autodiff.count).allSatisfy { composed[flat: $0] == autodiff[flat: $0] })
        expectClose(fused, autodiff, tolerance: 1e-5, "\(link) N \(n) \(residual) \(pooling)")
    }
}

/// Token input without positions: the blocks' fused factors take their link weights from per-token tables.
@Suite("Paramixer per-token link weights")
struct ParamixerTokenRowsTests {
    func model(positions: Bool, dropout1: Float, link: LinkProtocol = .chord, n: Int = 40, blocks: Int = 2) throws -> Paramixer {
        var g = RandomGenerator(seed: 5)
        let configuration = ParamixerConfiguration(vocabularySize: 6, length: n, embeddingSize: 16, hiddenSize: 12, blocks: blocks,
                                                   linkProtocol: link, dropout1: dropout1, pooling: .cls,
                                                   positionalEmbedding: positions, outputCount: 3)
        return try Paramixer(configuration: configuration, generator: &g)
    }

    func ids(_ n: Int, batch: Int = 3) -> IntTensor {
        var g = RandomGenerator(seed: 9)
        return IntTensor(shape: [batch, n], scalars: (0..<(batch * n)).map { _ in Int32(g.nextInt(below: 6)) })
    }

    @Test("offered for token input without active dropout, with the position table when there is one")
    func offeredWhenLookup() throws {
        let input = SequenceInput.tokens(ids(40))
        let plain = try model(positions: false, dropout1: 0.3)
        plain.train(false)
        #expect(plain.inputStage.tokenRows(input) != nil && plain.inputStage.tokenRows(input)?.positions == nil)
        plain.train(true)
        #expect(plain.inputStage.tokenRows(input) == nil)
        let withPositions = try model(positions: true, dropout1: 0)
        #expect(withPositions.inputStage.tokenRows(input)?.positions?.shape == [40, 16])
        #expect(withPositions.inputStage.tokenRows(.features(Tensor(zeros: [1, 40, 16]))) == nil)
    }

    @Test("fused blocks on the token rows equal the per-position fused blocks (bit for bit without positions, the first layer split with them) and the model the autodiff forward",
          arguments: [(LinkProtocol.chord, false), (.cdil, false), (.chord, true), (.cdil, true)])
    func matchesFusedAndAutodiff(_ c: (LinkProtocol, Bool)) throws {
        let (link, positions) = c
        let m = try model(positions: positions, dropout1: 0, link: link)
        m.train(false)
        let input = SequenceInput.tokens(ids(40))
        let rows = try #require(m.inputStage.tokenRows(input))
        #expect((rows.positions != nil) == positions && m.attention[0].usesTable(rows, data: Tensor(zeros: [3, 40, 16])))
        withoutGradient {
            let (embedded, stream, _) = m.inputStage(input)
            var withRows = stream, without = stream
            for block in m.attention {
                withRows = block(withRows, data: embedded, fusedInference: true, tokenRows: rows)
                without = block(without, data: embedded, fusedInference: true, tokenRows: nil)
            }
            if positions {
                expectClose(withRows.value, without.value, tolerance: 1e-5, "\(link) blocks")
            } else {
                #expect(withRows.value.scalars == without.value.scalars)
            }
        }
        let autodiff = m(input, fusedInference: false).value
        let fused = withoutGradient { m(input, fusedInference: true).value }
        expectClose(fused, autodiff, tolerance: 1e-5, "\(link) positions \(positions)")
    }

    @Test("the split needs fewer table rows than half the batch's positions, unless the position part is kept")
    func splitOnlyWhenSmaller() throws {
        let m = try model(positions: true, dropout1: 0)
        let rows = try #require(m.inputStage.tokenRows(.tokens(ids(40, batch: 1))))
        #expect(!m.attention[0].usesTable(rows, data: Tensor(zeros: [1, 40, 16])))
        #expect(m.attention[0].usesTable(rows, data: Tensor(zeros: [1, 40, 16]), keptPositions: true))
    }

    @Test("without a graph the position part W1·p + b1 is kept between calls and made again when the positions, a W1 or a b1 change",
          arguments: [LinkProtocol.chord, .cdil])
    func keptPositionPart(_ link: LinkProtocol) throws {
        let m = try model(positions: true, dropout1: 0, link: link)
        m.train(false)
        let input = SequenceInput.tokens(ids(40, batch: 1))
        var previous = withoutGradient { m(input, fusedInference: true).value }
        expectClose(previous, m(input, fusedInference: false).value, tolerance: 1e-5, "\(link) first call")
        #expect(withoutGradient { m(input, fusedInference: true).value }.scalars == previous.scalars)
        let positions = try #require((m.inputStage as? ParamixerInput)?.apcEmbedding?.weight)
        let firstLayer = try #require(m.attention[1].fs[2].layers[0] as? Linear)
        // Changed in place, as an optimizer step changes them: the storage stays, its floats do not.
        for (name, parameter) in [("positions", positions), ("W1", firstLayer.weight), ("b1", try #require(firstLayer.bias))] {
            parameter.value.withUnsafeMutablePointer { $0[1] += 0.5 }
            let fused = withoutGradient { m(input, fusedInference: true).value }
            #expect(fused.scalars != previous.scalars, "\(link) \(name) changed the output")
            expectClose(fused, m(input, fusedInference: false).value, tolerance: 1e-5, "\(link) after \(name) changed")
            previous = fused
        }
    }

    func trainingStep(_ m: Paramixer, _ input: SequenceInput, tableRows: Bool) throws -> (loss: Float, gradients: [(String, Tensor)]) {
        try paramixerTrainingStep(m, input, tokenRows: tableRows ? m.inputStage.tokenRows(input) : nil)
    }

    @Test("training through the tables gives the loss and gradients of f per position (no padding row), without and with positions",
          arguments: [(LinkProtocol.chord, false), (.cdil, false), (.chord, true), (.cdil, true)])
    func trainingMatchesPerPosition(_ c: (LinkProtocol, Bool)) throws {
        let (link, positions) = c
        let m = try model(positions: positions, dropout1: 0, link: link)
        let input = SequenceInput.tokens(ids(40))
        #expect(m.inputStage.tokenRows(input) != nil)
        let table = try trainingStep(m, input, tableRows: true), perPosition = try trainingStep(m, input, tableRows: false)
        #expect(abs(table.loss - perPosition.loss) <= 1e-5 * max(1, abs(perPosition.loss)))
        for ((name, a), (_, b)) in zip(table.gradients, perPosition.gradients) {
            expectClose(a, b, tolerance: 1e-4, "\(link) positions \(positions) \(name)")
        }
    }

    @Test("with a padding row, training through the tables gives the per-position loss and gradients, none into the padding row",
          arguments: [false, true])
    func paddingRowTrainsThroughTables(_ positions: Bool) throws {
        var g = RandomGenerator(seed: 5)
        let configuration = ParamixerConfiguration(vocabularySize: 6, length: 40, embeddingSize: 16, hiddenSize: 12, blocks: 2,
                                                   pooling: .cls, positionalEmbedding: positions, paddingIndex: 0, outputCount: 3)
        let m = try Paramixer(configuration: configuration, generator: &g)
        let input = SequenceInput.tokens(ids(40))
        #expect(ids(40).scalars.contains(0))
        let rows = try #require(m.inputStage.tokenRows(input))
        #expect(rows.paddingIndex == 0 && m.attention[0].usesTable(rows, data: Tensor(zeros: [3, 40, 16])))
        let table = try trainingStep(m, input, tableRows: true), perPosition = try trainingStep(m, input, tableRows: false)
        #expect(abs(table.loss - perPosition.loss) <= 1e-5 * max(1, abs(perPosition.loss)))
        for ((name, a), (_, b)) in zip(table.gradients, perPosition.gradients) {
            expectClose(a, b, tolerance: 1e-4, "positions \(positions) \(name)")
        }
        let embeddingGradient = try #require(table.gradients.first { $0.0 == "embedding.weight" }).1
        #expect(embeddingGradient.scalars.prefix(16).allSatisfy { $0 == 0 })
        #expect(embeddingGradient.scalars.dropFirst(16).contains { $0 != 0 })
    }
}

/// Real-valued features without positions: the factors' first layer folds into the input projection.
@Suite("Paramixer folded linear input")
struct ParamixerLinearInputTests {
    func model(features: Int = 2, d: Int = 16, positions: Bool = false, dropout1: Float = 0, link: LinkProtocol = .chord,
               blocks: Int = 2) throws -> Paramixer {
        var g = RandomGenerator(seed: 8)
        let configuration = ParamixerConfiguration(inputFeatures: features, length: 40, embeddingSize: d, hiddenSize: 12, blocks: blocks,
                                                   linkProtocol: link, dropout1: dropout1, pooling: .flatten,
                                                   positionalEmbedding: positions, outputCount: 3)
        return try Paramixer(configuration: configuration, generator: &g)
    }

    func input(features: Int = 2, batch: Int = 3) -> SequenceInput {
        var g = RandomGenerator(seed: 4)
        return .features(Tensor.normal([batch, 40, features], mean: 0, standardDeviation: 1, generator: &g))
    }

    @Test("offered for features without positions or active dropout, folded only when narrower than the embedding")
    func offered() throws {
        let m = try model(dropout1: 0.3)
        m.train(false)
        let rows = try #require(m.inputStage.linearInput(input()))
        #expect(rows.weight.shape == [16, 2] && m.attention[0].foldsInput(rows, data: Tensor(zeros: [3, 40, 16])))
        m.train(true)
        #expect(m.inputStage.linearInput(input()) == nil)
        #expect(try model(positions: true).inputStage.linearInput(input()) == nil)
        let wide = try model(features: 16)
        let same = try #require(wide.inputStage.linearInput(input(features: 16)))
        #expect(!wide.attention[0].foldsInput(same, data: Tensor(zeros: [3, 40, 16])))
    }

    @Test("the fused forward on the folded input equals the autodiff forward", arguments: [LinkProtocol.chord, .cdil])
    func fusedMatchesAutodiff(_ link: LinkProtocol) throws {
        let m = try model(link: link)
        m.train(false)
        let x = input()
        let (embedded, stream, _) = m.inputStage(x)
        let rows = try #require(m.inputStage.linearInput(x))
        withoutGradient {
            var folded = stream, plain = stream
            for block in m.attention {
                folded = block(folded, data: embedded, fusedInference: true, linearInput: rows)
                plain = block(plain, data: embedded, fusedInference: true)
            }
            expectClose(folded.value, plain.value, tolerance: 1e-5, "\(link) fused blocks")
        }
        expectClose(withoutGradient { m(x, fusedInference: true).value }, m(x, fusedInference: false).value,
                    tolerance: 1e-5, "\(link) model")
    }

    func trainingStep(_ m: Paramixer, _ x: SequenceInput, folded: Bool) throws -> (loss: Float, gradients: [(String, Tensor)]) {
        try paramixerTrainingStep(m, x, linearInput: folded ? m.inputStage.linearInput(x) : nil)
    }

    @Test("training through the fold gives the loss and gradients of f on the embedded input", arguments: [LinkProtocol.chord, .cdil])
    func trainingMatchesUnfolded(_ link: LinkProtocol) throws {
        let m = try model(link: link)
        let x = input()
        #expect(m.inputStage.linearInput(x) != nil)
        let folded = try trainingStep(m, x, folded: true), plain = try trainingStep(m, x, folded: false)
        #expect(abs(folded.loss - plain.loss) <= 1e-5 * max(1, abs(plain.loss)))
        #expect(folded.gradients.map(\.0) == plain.gradients.map(\.0))
        for ((name, a), (_, b)) in zip(folded.gradients, plain.gradients) {
            expectClose(a, b, tolerance: 1e-4, "\(link) \(name)")
        }
    }
}

/// Loss and every parameter's gradient of one training step of `m` on three sequences (classes 0, 2, 1), its blocks
/// given `tokenRows` or `linearInput` (nil: the factors' f-MLPs on the embedded input, per position).
func paramixerTrainingStep(_ m: Paramixer, _ input: SequenceInput, tokenRows: TokenRows? = nil,
                           linearInput: LinearInput? = nil) throws -> (loss: Float, gradients: [(String, Tensor)]) {
    for p in m.parameters() { p.grad = nil }
    let (embedded, stream, _) = m.inputStage(input)
    var h = stream
    for block in m.attention {
        h = block(h, data: embedded, fusedInference: false, tokenRows: tokenRows, linearInput: linearInput)
    }
    let logits = m.outputStage(input) { _ in (h, nil) }
    let loss = crossEntropy(logits: logits, targets: IntTensor([0, 2, 1]))
    try loss.backward()
    return (loss.value.scalars[0], try m.namedParameters().map { ($0.0, try #require($0.1.grad)) })
}
