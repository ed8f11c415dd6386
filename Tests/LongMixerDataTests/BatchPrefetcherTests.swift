import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore

@Suite("Batch prefetching")
struct BatchPrefetcherTests {
    /// A shuffled split of 37 labelled documents of varied lengths, rows of 12 with CLS and SEP.
    static func split() -> LabelledSequences {
        var documents = TokenSequences()
        for i in 0..<37 { documents.append((0..<(3 + i % 15)).map { UInt16(3 + ($0 * 7 + i) % 200) }) }
        return LabelledSequences(documents: documents, labels: (0..<37).map { Int32($0 % 4) }, format: SequenceFormat(length: 12, cls: 1, sep: 2))
    }

    /// Step k's batch as the trainer takes it: positions k·B ..< (k+1)·B of the epoch's permutation.
    static func batches(background: Bool, steps: Range<Int>, batchSize: Int = 8) throws -> [(tokens: [Int32], labels: [Int32])] {
        let source = split()
        let perEpoch = source.batchCount(size: batchSize)
        var order = EpochOrder(count: source.count, seed: 9)
        let prefetcher = BatchPrefetcher(endStep: steps.upperBound, background: background) { step -> Batch in
            let first = (step % perEpoch) * batchSize
            return source.batch(samples: order.samples(epoch: step / perEpoch, positions: first..<min(first + batchSize, source.count)))
        }
        defer { prefetcher.stop() }
        return try steps.map { step in
            let b = try prefetcher.value(step: step)
            guard case .tokens(let t) = b.input, case .classes(let l) = b.targets else { throw UserError(what: "batch", why: "not tokens") }
            return (t.scalars, l.scalars)
        }
    }

    @Test("the same batches with and without the background thread, from the first step or a resumed one")
    func sameBatches() throws {
        let direct = try Self.batches(background: false, steps: 0..<23)
        let prefetched = try Self.batches(background: true, steps: 0..<23)
        #expect(direct.count == 23 && direct.map(\.tokens) == prefetched.map(\.tokens) && direct.map(\.labels) == prefetched.map(\.labels))
        // A run resumed at step 11 takes the same batches from there on.
        let resumed = try Self.batches(background: true, steps: 11..<23)
        #expect(resumed.map(\.tokens) == Array(direct[11...]).map(\.tokens))
        // Epochs differ (a new permutation each).
        #expect(direct[0].tokens != direct[5].tokens)
    }

    @Test("an error preparing a batch in the background is thrown by the step that asks for it")
    func errorSurfaces() throws {
        let failure = UserError(what: "batch 3", why: "cannot be laid out")
        let prefetcher = BatchPrefetcher(endStep: 10, background: true) { step -> Int in
            if step == 3 { throw failure }
            return step * 10
        }
        defer { prefetcher.stop() }
        #expect(try prefetcher.value(step: 0) == 0 && prefetcher.value(step: 1) == 10 && prefetcher.value(step: 2) == 20)
        #expect(prefetcher.isRunning)
        // Step 3 was prepared (and failed) on the background thread while step 2 was taken.
        let error = #expect(throws: UserError.self) { _ = try prefetcher.value(step: 3) }
        #expect(error == failure)
        // The prefetcher goes on: the next step is prepared when asked for.
        #expect(try prefetcher.value(step: 4) == 40)
    }

    @Test("prepare runs one call at a time, in step order; stop ends the thread, also mid-preparation")
    func oneAtATimeAndStop() throws {
        let lock = NSLock()
        var running = 0, overlaps = 0, calls: [Int] = []
        let prefetcher = BatchPrefetcher(endStep: 50, background: true) { step -> Int in
            lock.withLock { running += 1; if running > 1 { overlaps += 1 }; calls.append(step) }
            usleep(200)
            lock.withLock { running -= 1 }
            return step
        }
        for step in 0..<20 { #expect(try prefetcher.value(step: step) == step) }
        prefetcher.stop()
        #expect(!prefetcher.isRunning)
        // Step 20 was queued when stop came: prepared before the thread ended, or never.
        #expect(overlaps == 0 && Array(calls.prefix(20)) == Array(0..<20) && calls.count <= 21)
        // After stop, values are prepared on the calling thread; no thread is started again.
        #expect(try prefetcher.value(step: 30) == 30 && !prefetcher.isRunning)
        prefetcher.stop()

        // A prefetcher dropped without stop ends its thread when it goes away.
        var dropped: BatchPrefetcher<Int>? = BatchPrefetcher(endStep: 5, background: true) { $0 }
        #expect(try dropped?.value(step: 0) == 0 && dropped?.isRunning == true)
        dropped = nil
        #expect(dropped == nil)
    }

    @Test("sources that generate rows with parallelFor are not prepared in the background")
    func backgroundEligibility() throws {
        #expect(Self.split().preparesBatchesInBackground)
        let synthetic = try SyntheticDataset.splits(task: .adding, length: 16, sizes: SplitSizes(train: 4, validation: 2, test: 2), seed: 1)
        #expect(!synthetic.train.preparesBatchesInBackground)
    }
}
