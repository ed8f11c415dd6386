import Testing
@testable import LongMixerNN
import LongMixerCore
import LongMixerData
import LongMixerModels
import LongMixerTraining

private final class Block: Module {
    let norm = LayerNorm(dimensions: 4)
    let mlp: Sequential
    let scale = Buffer(Tensor(ones: [1]))
    init(generator: inout RandomGenerator) {
        mlp = makeMLP(inputDimensions: 4, hiddenDimensions: 8, outputDimensions: 4, generator: &generator)
    }
}

private final class Model: Module {
    let embedding: Embedding
    let blocks: [Block]
    let head: Linear
    let dropout: Dropout
    init(generator: inout RandomGenerator) {
        embedding = Embedding(count: 10, dimensions: 4, paddingIndex: 0, generator: &generator)
        blocks = [Block(generator: &generator), Block(generator: &generator)]
        head = Linear(inputDimensions: 4, outputDimensions: 3, bias: false, generator: &generator)
        dropout = Dropout(probability: 0.5, generator: &generator)
    }
}

@Suite("Module")
struct ModuleTests {
    @Test("derived tables are kept while their sources are bytewise unchanged, made again after any change")
    func parameterDerivedTables() {
        let tables = ParameterDerivedTables()
        var made = 0
        func get(_ sources: [Tensor]) -> Float {
            tables.tables(derivedFrom: sources) {
                made += 1
                return [Tensor(shape: [1], scalars: [sources.map { $0.scalars.reduce(0, +) }.reduce(0, +)])]
            }[0].scalars[0]
        }
        var a = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6]), b = Tensor(shape: [2], scalars: [7, 8])
        #expect(get([a, b]) == 36 && made == 1)
        #expect(get([a, b]) == 36 && made == 1)
        #expect(get([Tensor(shape: [2, 3], scalars: a.scalars), b]) == 36 && made == 1)   // same floats, other storage
        b.withUnsafeMutablePointer { $0[1] = 9 }
        #expect(get([a, b]) == 37 && made == 2)
        #expect(get([a.reshaped([3, 2]), b]) == 37 && made == 3)                           // same floats, other shape
        #expect(get([a]) == 21 && made == 4)
        a.withUnsafeMutablePointer { $0[0] = -0.0 }
        #expect(get([a]) == 20 && made == 5)
        a.withUnsafeMutablePointer { $0[0] = 0 }                                             // −0 and +0: other bytes
        #expect(get([a]) == 20 && made == 6)
    }

    @Test func dottedParameterNamesInDeclarationOrder() {
        var g = RandomGenerator(seed: 1)
        let m = Model(generator: &g)
        let names = m.namedParameters().map(\.0)
        #expect(names == [
            "embedding.weight",
            "blocks.0.norm.weight", "blocks.0.norm.bias",
            "blocks.0.mlp.0.weight", "blocks.0.mlp.0.bias", "blocks.0.mlp.2.weight", "blocks.0.mlp.2.bias",
            "blocks.1.norm.weight", "blocks.1.norm.bias",
            "blocks.1.mlp.0.weight", "blocks.1.mlp.0.bias", "blocks.1.mlp.2.weight", "blocks.1.mlp.2.bias",
            "head.weight",
        ])
        #expect(m.namedBuffers().map(\.0) == ["blocks.0.scale", "blocks.1.scale"])
        // 10·4 + 2·(4+4 + 4·8+8 + 8·4+4) + 4·3
        #expect(m.parameterCount == 40 + 2 * (8 + 40 + 36) + 12)
    }

    @Test func trainAndEvalReachEverySubmodule() {
        var g = RandomGenerator(seed: 2)
        let m = Model(generator: &g)
        m.eval()
        #expect(!m.dropout.isTraining && !m.blocks[1].mlp.layers[0].isTraining)
        m.train()
        #expect(m.dropout.isTraining && m.blocks[0].norm.isTraining)
    }

    @Test func linearInitMatchesPyTorchDefault() {
        var g = RandomGenerator(seed: 3)
        let l = Linear(inputDimensions: 64, outputDimensions: 256, generator: &g)
        let bound: Float = 1 / 8
        let w = l.weight.value.scalars, b = l.bias!.value.scalars
        #expect(w.allSatisfy { abs($0) <= bound } && b.allSatisfy { abs($0) <= bound })
        // U(−a, a) has variance a²/3.
        let variance = w.reduce(0) { $0 + $1 * $1 } / Float(w.count)
        #expect(abs(variance - bound * bound / 3) < 0.1 * bound * bound / 3)
        let n = Linear(inputDimensions: 64, outputDimensions: 256, standardDeviation: 0.02, generator: &g)
        let nv = n.weight.value.scalars.reduce(0) { $0 + $1 * $1 } / Float(n.weight.value.count)
        #expect(abs(nv.squareRoot() - 0.02) < 0.002)
        #expect(n.bias!.value.scalars.allSatisfy { $0 == 0 })
    }

    @Test func embeddingAndLayerNormInit() {
        var g = RandomGenerator(seed: 4)
        let e = Embedding(count: 1000, dimensions: 16, paddingIndex: 3, generator: &g)
        #expect(e.weight.value.slice(axis: 0, 3..<4).scalars.allSatisfy { $0 == 0 })
        let v = e.weight.value.scalars
        let variance = v.reduce(0) { $0 + $1 * $1 } / Float(v.count)
        #expect(abs(variance - 1) < 0.05)
        let n = LayerNorm(dimensions: 5)
        #expect(n.weight.value.scalars == [1, 1, 1, 1, 1] && n.bias.value.scalars == [0, 0, 0, 0, 0])
    }

    @Test func dropoutScalesInTrainingAndIsIdentityInEval() {
        var g = RandomGenerator(seed: 5)
        let d = Dropout(probability: 0.25, generator: &g)
        let x = Variable(Tensor(ones: [10_000]))
        let y = d(x).value.scalars
        let keptValue: Float = 1 / 0.75
        #expect(Set(y) == [0, keptValue])
        let kept = Float(y.filter { $0 != 0 }.count) / Float(y.count)
        #expect(abs(kept - 0.75) < 0.02)
        d.eval()
        #expect(d(x).value.scalars == x.value.scalars)
    }

    @Test func randomStreamsAreFoundAndRestoringOneRepeatsItsDraws() {
        var g = RandomGenerator(seed: 1)
        let model = Sequential([Dropout(probability: 0.5, generator: &g), Linear(inputDimensions: 4, outputDimensions: 4, generator: &g),
                                Dropout(probability: 0.5, generator: &g)])
        #expect(model.namedRandomStreams().map(\.0) == ["0.random", "2.random"])
        let x = Variable(Tensor(ones: [2, 4]))
        _ = model(x)
        let saved = model.namedRandomStreams().map { $0.1.generator.state }
        let next = model(x).value.scalars
        for ((_, stream), state) in zip(model.namedRandomStreams(), saved) { stream.generator.state = state }
        #expect(model(x).value.scalars == next)
    }

    @Test func seededConstructionIsReproducible() {
        var g1 = RandomGenerator(seed: 9), g2 = RandomGenerator(seed: 9)
        let a = Model(generator: &g1), b = Model(generator: &g2)
        for ((_, p), (_, q)) in zip(a.namedParameters(), b.namedParameters()) { #expect(p.value.scalars == q.value.scalars) }
    }
}
