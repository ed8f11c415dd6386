import Foundation
import LongMixerCore

// Readers of the image data sets' files: IDX (MNIST, Fashion-MNIST; gzip-compressed or plain) and the
// CIFAR-10 binary batches. Each refuses anything malformed with one error line naming the file.

/// Labelled 8-bit grayscale images of one size.
public struct GrayImages: Equatable, Sendable {
    public var width: Int
    public var height: Int
    /// count × height × width bytes, row-major.
    public var pixels: [UInt8]
    public var labels: [UInt8]

    public var count: Int { labels.count }

    public init(width: Int, height: Int, pixels: [UInt8], labels: [UInt8]) {
        check(pixels.count == width * height * labels.count, "GrayImages: \(pixels.count) pixels for \(labels.count) images of \(width)×\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
        self.labels = labels
    }

    /// The images centred on a `side`×`side` zero canvas (28×28 → 32×32 adds 2 pixels on each side).
    public func padded(to side: Int) -> GrayImages {
        check(side >= width && side >= height, "padded(to: \(side)) is smaller than \(width)×\(height)")
        let top = (side - height) / 2, left = (side - width) / 2
        var out = [UInt8](repeating: 0, count: count * side * side)
        for i in 0..<count {
            for y in 0..<height {
                let source = (i * height + y) * width, target = i * side * side + (top + y) * side + left
                out[target..<target + width] = pixels[source..<source + width]
            }
        }
        return GrayImages(width: side, height: side, pixels: out, labels: labels)
    }
}

public enum IDXReader {
    /// An IDX array of unsigned bytes (type 0x08): its dimensions and values. `data` may be gzip-compressed.
    public static func read(_ data: Data, name: String) throws -> (dimensions: [Int], values: [UInt8]) {
        let bytes = [UInt8](try Decompression.decompressIfNeeded(data, name: name, limit: 1 << 30))
        guard bytes.count >= 4 else { throw dataFileError(name, "is truncated (\(bytes.count) bytes, shorter than an IDX header)") }
        guard bytes[0] == 0, bytes[1] == 0 else { throw dataFileError(name, "is not an IDX file (bad magic)") }
        guard bytes[2] == 0x08 else { throw dataFileError(name, "holds IDX type 0x\(String(bytes[2], radix: 16)); expected unsigned bytes (0x08)") }
        let rank = Int(bytes[3])
        guard (1...4).contains(rank) else { throw dataFileError(name, "has \(rank) dimensions (1…4 expected)") }
        guard bytes.count >= 4 + 4 * rank else { throw dataFileError(name, "is truncated (IDX dimensions)") }
        var dimensions: [Int] = []
        var total = 1
        for d in 0..<rank {
            let at = 4 + 4 * d
            let n = Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
            dimensions.append(n)
            total = total.multipliedReportingOverflow(by: n).overflow ? Int.max : total * n
        }
        let body = bytes.count - 4 - 4 * rank
        guard total == body else {
            throw dataFileError(name, body < total ? "is truncated (\(body) of \(total) data bytes)" : "has \(body - total) unexpected trailing bytes")
        }
        return (dimensions, Array(bytes[(4 + 4 * rank)...]))
    }

    /// An images file and its labels file (MNIST layout: [n, rows, cols] and [n]), labels < `classes`.
    public static func images(_ imageData: Data, name imageName: String, labels labelData: Data, name labelName: String,
                              classes: Int) throws -> GrayImages {
        let (imageDims, pixels) = try read(imageData, name: imageName)
        guard imageDims.count == 3, imageDims[0] >= 1, imageDims[1] >= 1, imageDims[2] >= 1 else {
            throw dataFileError(imageName, "has dimensions \(imageDims); expected [images, rows, columns]")
        }
        let (labelDims, labels) = try read(labelData, name: labelName)
        guard labelDims.count == 1 else { throw dataFileError(labelName, "has dimensions \(labelDims); expected [labels]") }
        guard labelDims[0] == imageDims[0] else {
            throw dataFileError(labelName, "holds \(labelDims[0]) labels for the \(imageDims[0]) images of \(imageName)")
        }
        if let bad = labels.first(where: { Int($0) >= classes }) {
            throw dataFileError(labelName, "has label \(bad) outside the \(classes) classes")
        }
        return GrayImages(width: imageDims[2], height: imageDims[1], pixels: pixels, labels: labels)
    }
}

public enum CIFAR10Reader {
    public static let classNames = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    /// A record: the label byte, then 1024 red, 1024 green and 1024 blue bytes (row-major 32×32).
    static let recordBytes = 1 + 3 * 1024

    /// One binary batch (e.g. `data_batch_1.bin`), converted to gray with PIL's convert("L").
    public static func batch(_ data: Data, name: String) throws -> GrayImages {
        guard !data.isEmpty else { throw dataFileError(name, "is empty") }
        guard data.count % recordBytes == 0 else {
            throw dataFileError(name, "has \(data.count) bytes, not a whole number of \(recordBytes)-byte CIFAR-10 records (truncated?)")
        }
        let n = data.count / recordBytes
        var pixels = [UInt8](repeating: 0, count: n * 1024)
        var labels = [UInt8](repeating: 0, count: n)
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            for i in 0..<n {
                let r = i * recordBytes
                guard raw[r] < 10 else { throw dataFileError(name, "record \(i) has label \(raw[r]) (CIFAR-10 labels are 0…9)") }
                labels[i] = raw[r]
                for p in 0..<1024 { pixels[i * 1024 + p] = luma(raw[r + 1 + p], raw[r + 1025 + p], raw[r + 2049 + p]) }
            }
        }
        return GrayImages(width: 32, height: 32, pixels: pixels, labels: labels)
    }

    /// The training batches (`data_batch_1.bin` … `data_batch_5.bin`, in order) and the test batch of
    /// the folder `cifar-10-batches-bin`.
    public static func read(folder: URL) throws -> (train: GrayImages, test: GrayImages) {
        func load(_ file: String) throws -> GrayImages {
            let url = folder.appendingPathComponent(file)
            let data: Data
            do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
                throw dataFileError(url.path, "is missing or unreadable", remedy: "the folder needs data_batch_1.bin … data_batch_5.bin and test_batch.bin")
            }
            return try batch(data, name: url.path)
        }
        var train = try load("data_batch_1.bin")
        for k in 2...5 {
            let b = try load("data_batch_\(k).bin")
            train.pixels += b.pixels
            train.labels += b.labels
        }
        return (train, try load("test_batch.bin"))
    }
}
