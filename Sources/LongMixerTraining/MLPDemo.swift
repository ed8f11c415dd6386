import Foundation
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

// A quick end-to-end check of the stack (tensors → autodiff → layers → Adam → schedule): a 2-layer
// MLP learns a synthetic, non-linearly separable classification problem in a few hundred steps.
// Everything random comes from one seed, so a run is reproducible to the last bit for a given
// seed and thread count.

/// Points on `classes` concentric rings in 2-D: class k lies at radius (k + 1)·scale with Gaussian
/// radial noise, at a uniformly random angle. No linear classifier separates more than two of the
/// classes; the Bayes accuracy is about 99 % at the default noise.
public struct SyntheticRings: Sendable {
    /// [S, 2]
    public let features: Tensor
    /// [S], class indices in 0..<classes
    public let labels: IntTensor
    public let classes: Int

    public static let scale: Float = 1.0 / 3.0

    /// `samplesPerClass` points per class, interleaved by class (sample i has class i % classes).
    public init(classes: Int = 3, samplesPerClass: Int, noise: Float = 0.2, generator: inout RandomGenerator) {
        check(classes >= 2, "SyntheticRings: need at least 2 classes, got \(classes)")
        check(samplesPerClass >= 1, "SyntheticRings: samplesPerClass must be ≥ 1, got \(samplesPerClass)")
        check(noise.isFinite && noise >= 0, "SyntheticRings: noise must be finite and ≥ 0, got \(noise)")
        let count = classes * samplesPerClass
        var points = [Float](repeating: 0, count: 2 * count)
        var labels = [Int32](repeating: 0, count: count)
        for i in 0..<count {
            let k = i % classes
            let radius = Double((Float(k + 1) + noise * generator.nextNormal()) * SyntheticRings.scale)
            let angle = 2 * Double.pi * generator.nextUniformDouble()
            points[2 * i] = Float(radius * Foundation.cos(angle))
            points[2 * i + 1] = Float(radius * Foundation.sin(angle))
            labels[i] = Int32(k)
        }
        features = Tensor(shape: [count, 2], scalars: points)
        self.labels = IntTensor(shape: [count], scalars: labels)
        self.classes = classes
    }

    public var count: Int { labels.count }

    /// The rows `indices` as a batch: features [B, 2] and labels [B].
    public func batch(_ indices: ArraySlice<Int>) -> (features: Tensor, labels: IntTensor) {
        var x = Tensor(uninitializedShape: [indices.count, 2])
        var y = [Int32]()
        y.reserveCapacity(indices.count)
        let source = features.pointer
        x.withUnsafeMutablePointer { out in
            for (row, i) in indices.enumerated() {
                check(i >= 0 && i < count, "SyntheticRings.batch: index \(i) outside 0..<\(count)")
                out[2 * row] = source[2 * i]
                out[2 * row + 1] = source[2 * i + 1]
                y.append(labels.scalars[i])
            }
        }
        return (x, IntTensor(shape: [indices.count], scalars: y))
    }
}

/// Fraction of rows of `logits` [R, C] whose arg-max equals the label (first maximum on ties).
public func classificationAccuracy(logits: Tensor, labels: IntTensor) -> Float {
    check(logits.rank == 2 && labels.shape == [logits.shape[0]],
                 "classificationAccuracy: logits \(logits.shape) and labels \(labels.shape) do not match")
    let predictions = logits.max(axis: 1).indices.scalars
    let correct = zip(predictions, labels.scalars).reduce(0) { $0 + ($1.0 == $1.1 ? 1 : 0) }
    return labels.count == 0 ? 0 : Float(correct) / Float(labels.count)
}

/// What `runMLPDemo` measured.
public struct MLPDemoResult: Sendable {
    /// Training loss (mean cross-entropy of the mini-batch) before each update.
    public let losses: [Float]
    /// Accuracy on the training set after training.
    public let trainAccuracy: Float
    /// Accuracy on the held-out test set after training.
    public let testAccuracy: Float
    public let parameterCount: Int
    /// Wall-clock time of data generation, training and evaluation.
    public let seconds: Double
}

/// Trains `makeMLP` (2 → hidden → classes; ReLU by default, since GELU's SIMD `exp` makes debug builds
/// ~7× slower) with Adam and a warm-up + cosine schedule on `SyntheticRings` (train and test sets drawn
/// independently from the same seed) and reports the losses and accuracies. `progress(step, loss)` is
/// called after every update.
public func runMLPDemo(seed: UInt64, steps: Int = 300, batchSize: Int = 64, hiddenDimensions: Int = 64,
                       learningRate: Float = 0.02, activation: Activation.Kind = .relu, classes: Int = 3,
                       trainSamplesPerClass: Int = 400, testSamplesPerClass: Int = 200, progress: ((_ step: Int, _ loss: Float) -> Void)? = nil) -> MLPDemoResult {
    check(steps >= 1, "runMLPDemo: steps must be ≥ 1, got \(steps)")
    check(batchSize >= 1, "runMLPDemo: batchSize must be ≥ 1, got \(batchSize)")
    let start = DispatchTime.now().uptimeNanoseconds
    var root = RandomGenerator(seed: seed)
    var dataGenerator = root.split(), modelGenerator = root.split(), orderGenerator = root.split()
    let train = SyntheticRings(classes: classes, samplesPerClass: trainSamplesPerClass, generator: &dataGenerator)
    let test = SyntheticRings(classes: classes, samplesPerClass: testSamplesPerClass, generator: &dataGenerator)
    check(batchSize <= train.count, "runMLPDemo: batchSize \(batchSize) exceeds the \(train.count) training samples")

    let model = makeMLP(inputDimensions: 2, hiddenDimensions: hiddenDimensions, outputDimensions: classes,
                        activation: activation, generator: &modelGenerator)
    let optimizer = Adam(parameters: model.parameters(), learningRate: learningRate)
    let schedule = WarmupCosineSchedule(peakLearningRate: learningRate, warmupSteps: max(1, steps / 20),
                                        totalSteps: max(steps, 2), minimumLearningRate: learningRate / 20)

    var order = Array(0..<train.count)
    var cursor = order.count   // forces a shuffle before the first batch
    var losses: [Float] = []
    losses.reserveCapacity(steps)
    model.train()
    for step in 0..<steps {
        if cursor + batchSize > order.count {
            // Fisher–Yates with our generator (not Array.shuffle, whose algorithm the stdlib may change).
            for i in stride(from: order.count - 1, to: 0, by: -1) {
                order.swapAt(i, orderGenerator.nextInt(below: i + 1))
            }
            cursor = 0
        }
        let (x, y) = train.batch(order[cursor..<(cursor + batchSize)])
        cursor += batchSize
        optimizer.zeroGradients()
        let loss = crossEntropy(logits: model(Variable(x)), targets: y)
        do { try loss.backward() } catch { fatalError("runMLPDemo: step \(step): \(error)") }
        optimizer.setLearningRate(from: schedule, step: step)
        optimizer.step()
        let value = loss.value.scalar
        losses.append(value)
        progress?(step, value)
    }

    model.eval()
    let (trainAccuracy, testAccuracy) = withoutGradient {
        (classificationAccuracy(logits: model(Variable(train.features)).value, labels: train.labels),
         classificationAccuracy(logits: model(Variable(test.features)).value, labels: test.labels))
    }
    return MLPDemoResult(losses: losses, trainAccuracy: trainAccuracy, testAccuracy: testAccuracy,
                         parameterCount: model.parameterCount,
                         seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
}
