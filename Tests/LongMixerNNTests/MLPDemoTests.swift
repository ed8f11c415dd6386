import Foundation
import Testing
import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels

@Suite("MLP demo")
struct MLPDemoTests {
    @Test("A 2-layer MLP learns the rings to ≥ 95 % test accuracy, bit-reproducibly for a seed")
    func trainsAndIsDeterministic() {
        let first = runMLPDemo(seed: 42, steps: 200)
        #expect(first.losses.count == 200)
        #expect(first.losses.allSatisfy { $0.isFinite })
        #expect(first.testAccuracy >= 0.95, "test accuracy \(first.testAccuracy) after 200 steps")
        #expect(first.trainAccuracy >= 0.95, "train accuracy \(first.trainAccuracy) after 200 steps")
        // Learning happened: the last losses are far below the first (≈ ln 3 at initialisation).
        let head = first.losses.prefix(10).reduce(0, +) / 10, tail = first.losses.suffix(20).reduce(0, +) / 20
        #expect(tail < 0.25 * head, "loss went from \(head) to \(tail)")

        let second = runMLPDemo(seed: 42, steps: 200)
        #expect(second.losses.map(\.bitPattern) == first.losses.map(\.bitPattern), "same seed, different losses")
        #expect(second.testAccuracy == first.testAccuracy)

        let other = runMLPDemo(seed: 43, steps: 200)
        #expect(other.losses.map(\.bitPattern) != first.losses.map(\.bitPattern), "different seeds gave identical losses")
    }

    @Test("The rings data set is seeded, balanced, one ring per class")
    func ringsDataSet() {
        var a = RandomGenerator(seed: 5), b = RandomGenerator(seed: 5)
        let x = SyntheticRings(classes: 4, samplesPerClass: 50, generator: &a)
        let y = SyntheticRings(classes: 4, samplesPerClass: 50, generator: &b)
        #expect(x.features.shape == [200, 2] && x.labels.shape == [200])
        #expect(x.features.scalars.map(\.bitPattern) == y.features.scalars.map(\.bitPattern))
        for k in 0..<4 { #expect(x.labels.scalars.filter { $0 == Int32(k) }.count == 50) }
        // Mean radius of class k is (k + 1)·scale; every class is centred on the origin.
        let p = x.features.scalars
        for k in 0..<4 {
            let rows = (0..<200).filter { x.labels.scalars[$0] == Int32(k) }
            let radius = rows.map { (p[2 * $0] * p[2 * $0] + p[2 * $0 + 1] * p[2 * $0 + 1]).squareRoot() }.reduce(0, +) / 50
            #expect(abs(radius - Float(k + 1) * SyntheticRings.scale) < 0.05 * SyntheticRings.scale * Float(k + 1) + 0.03)
            let meanX = rows.map { p[2 * $0] }.reduce(0, +) / 50
            #expect(abs(meanX) < 0.25 * Float(k + 1) * SyntheticRings.scale)
        }
        let (bx, by) = x.batch([3, 0, 7])
        #expect(bx.scalars == [p[6], p[7], p[0], p[1], p[14], p[15]])
        #expect(by.scalars == [3, 0, 3])
    }

    @Test("classificationAccuracy counts arg-max matches")
    func accuracy() {
        let logits = Tensor(shape: [4, 3], scalars: [1, 2, 0, 5, 1, 1, 0, 0, 3, 2, 2, 1])
        #expect(classificationAccuracy(logits: logits, labels: IntTensor([1, 0, 2, 1])) == 0.75)
    }
}
