import Foundation
import Testing
import LongMixerTestSupport
import LongMixerNN
import LongMixerCore
import LongMixerData
import LongMixerModels
import LongMixerTraining

// Three Adam / AdamW steps on the core parity network against torch.optim (fixtures from
// `python3 Scripts/reference/core_parity.py`). Each step recomputes the loss and the
// gradients, then steps, exactly as the script does.

@Suite struct CoreOptimizerParityTests {
    /// Runs 3 optimizer steps from the fixture's initial weights and compares the losses seen and
    /// the final parameters with the `<prefix>.*` reference tensors.
    private func checkThreeSteps(prefix: String, makeOptimizer: ([Parameter]) -> any Optimizer) throws {
        let fixture = try CoreParityFixture()
        let net = try CoreParityNet.fromFixture()
        let tokens = try fixture.int("tokens"), targets = try fixture.int("targets")
        let optimizer = makeOptimizer(net.parameters())
        var losses: [Float] = []
        for _ in 0..<3 {
            optimizer.zeroGradients()
            let (_, loss) = net.loss(tokens, targets)
            try loss.backward()
            losses.append(loss.value.scalar)
            optimizer.step()
        }
        expectClose(Tensor(shape: [3], scalars: losses), try fixture.float("\(prefix).losses"), "\(prefix).losses")
        for (name, p) in net.namedParameters() {
            expectClose(p.value, try fixture.float("\(prefix).\(name)"), "\(prefix).\(name)")
        }
    }

    @Test func threeAdamStepsMatchPyTorch() throws {
        try checkThreeSteps(prefix: "adam") { Adam(parameters: $0, learningRate: 1e-2) }
    }

    @Test func threeAdamWStepsMatchPyTorch() throws {
        try checkThreeSteps(prefix: "adamw") { AdamW(parameters: $0, learningRate: 1e-2, weightDecay: 0.1) }
    }
}
