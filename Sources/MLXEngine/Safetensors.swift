import CMLXShim
import Foundation

/// A problem with a safetensors file; the message names the file and, where it applies, the tensor.
public struct SafetensorsError: Error, CustomStringConvertible, Equatable {
    /// What is wrong, naming the file and, where it applies, the tensor.
    public let message: String
    /// An error carrying `message`.
    public init(_ message: String) { self.message = message }
    /// The message, unchanged.
    public var description: String { message }
}

/// Reading and writing `.safetensors` files (all MLX dtypes, bf16 and f16 included).
public enum Safetensors {
    /// What the header says about one tensor.
    public struct Entry: Equatable, Sendable {
        /// The element type the header declares.
        public let dtype: DType
        /// The tensor's shape as the header declares it.
        public let shape: [Int]
        /// The tensor's bytes, as offsets from the start of the data section (which follows the 8-byte length and the header).
        public let byteRange: Range<Int>
    }

    /// Parses and validates the header: every tensor's dtype is known, its byte range matches its shape and
    /// lies inside the file. Reads only the header.
    public static func header(of url: URL) throws -> (entries: [String: Entry], metadata: [String: String]) {
        let path = url.path
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw SafetensorsError("\(path): file not found or not readable")
        }
        defer { try? handle.close() }
        // The open file's own size: the path may be a symlink (the Hugging Face cache links snapshots to blobs).
        let fileSize = Int((try? handle.seekToEnd()) ?? 0)
        try handle.seek(toOffset: 0)
        let headerLength = try declaredHeaderLength(handle.readData(ofLength: 8), fileSize: fileSize, name: path)
        return try parseHeader(handle.readData(ofLength: headerLength), fileSize: fileSize, name: path)
    }

    /// `header(of:)` for a whole file already in memory; `name` is what errors call it.
    public static func header(in file: Data, name: String) throws -> (entries: [String: Entry], metadata: [String: String]) {
        let (entries, metadata, _) = try headerAndDataStart(in: file, name: name)
        return (entries, metadata)
    }

    /// The header of an in-memory file and the offset of its data section (8 + the header's length).
    private static func headerAndDataStart(in file: Data, name: String) throws
        -> (entries: [String: Entry], metadata: [String: String], dataStart: Int) {
        let headerLength = try declaredHeaderLength(file.prefix(8), fileSize: file.count, name: name)
        let (entries, metadata) = try parseHeader(file.dropFirst(8).prefix(headerLength), fileSize: file.count, name: name)
        return (entries, metadata, 8 + headerLength)
    }

    /// The header length the first 8 bytes declare, checked against the file's size.
    private static func declaredHeaderLength(_ prefix: Data, fileSize: Int, name: String) throws -> Int {
        guard prefix.count == 8 else { throw SafetensorsError("\(name): truncated file (\(fileSize) bytes, no header)") }
        let declared = prefix.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard declared > 0, declared <= 100_000_000, 8 + Int(declared) <= fileSize else {
            throw SafetensorsError("\(name): truncated or corrupt header (declares \(declared) header bytes, file has \(fileSize))")
        }
        return Int(declared)
    }

    /// The entries and metadata of a header's JSON, each checked against the data section's size.
    private static func parseHeader(_ headerData: Data, fileSize: Int, name path: String) throws -> (entries: [String: Entry], metadata: [String: String]) {
        guard let json = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw SafetensorsError("\(path): header is not a JSON object")
        }
        let dataSize = fileSize - 8 - headerData.count
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in json {
            if name == "__metadata__" {
                for (k, v) in (value as? [String: Any]) ?? [:] { metadata[k] = v as? String ?? "\(v)" }
                continue
            }
            guard let info = value as? [String: Any] else { throw SafetensorsError("\(path): tensor '\(name)': entry is not an object") }
            guard let dtypeName = info["dtype"] as? String else { throw SafetensorsError("\(path): tensor '\(name)': missing dtype") }
            guard let dtype = DType(safetensorsName: dtypeName) else {
                throw SafetensorsError("\(path): tensor '\(name)': unsupported dtype \(dtypeName)")
            }
            guard let shape = integers(info["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
                throw SafetensorsError("\(path): tensor '\(name)': missing or invalid shape")
            }
            guard let offsets = integers(info["data_offsets"]), offsets.count == 2, offsets[0] >= 0, offsets[1] >= offsets[0]
            else { throw SafetensorsError("\(path): tensor '\(name)': missing or invalid data_offsets") }
            // A shape whose byte count does not fit in an Int cannot match any offsets.
            var expected: Int? = dtype.size
            for d in shape { expected = expected.flatMap { e in let (p, o) = e.multipliedReportingOverflow(by: d); return o ? nil : p } }
            guard let expected, offsets[1] - offsets[0] == expected else {
                throw SafetensorsError("\(path): tensor '\(name)': \(offsets[1] - offsets[0]) bytes for shape \(shape) \(dtypeName) (expected \(expected.map(String.init) ?? "more than \(Int.max)"))")
            }
            guard offsets[1] <= dataSize else {
                throw SafetensorsError("\(path): truncated file: tensor '\(name)' ends at byte \(offsets[1]) of a \(dataSize)-byte data section")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, byteRange: offsets[0]..<offsets[1])
        }
        return (entries, metadata)
    }

    /// A JSON array of whole numbers below 2^53 (beyond any real file), or nil: 2.5, 1e30 and "3" are not.
    private static func integers(_ value: Any?) -> [Int]? {
        guard let numbers = value as? [NSNumber] else { return nil }
        var result: [Int] = []
        for number in numbers {
            let d = number.doubleValue
            guard d.rounded() == d, abs(d) < 9_007_199_254_740_992 else { return nil }
            result.append(Int(d))
        }
        return result
    }

    /// Loads every tensor after validating the header. The file is memory-mapped and each tensor copied into
    /// MLX memory, so peak memory stays near the size of the weights.
    public static func load(_ url: URL) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        guard FileManager.default.isReadableFile(atPath: url.path) else {
            throw SafetensorsError("\(url.path): file not found or not readable")
        }
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw SafetensorsError("\(url.path): cannot read (\(error.localizedDescription))")
        }
        return try load(from: data, name: url.path)
    }

    /// `load(_:)` for a whole file already in memory (or mapped); the header is validated against these bytes.
    public static func load(from file: Data, name: String) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        let (entries, metadata, base) = try headerAndDataStart(in: file, name: name)
        var tensors: [String: Tensor] = [:]
        try file.withUnsafeBytes { raw in
            for (tensorName, entry) in entries {
                let slice = UnsafeRawBufferPointer(rebasing: raw[(base + entry.byteRange.lowerBound)..<(base + entry.byteRange.upperBound)])
                let t = Tensor(bytes: slice, shape: entry.shape, dtype: entry.dtype)
                if let e = t.error { throw SafetensorsError("\(name): tensor '\(tensorName)': \(e.message)") }
                tensors[tensorName] = t
            }
        }
        return (tensors, metadata)
    }

    /// Writes tensors atomically: a temporary file in the same folder, then a rename over `url`. The layout is the
    /// published format (8-byte header length, JSON header padded to 8 bytes, little-endian data in name order).
    public static func save(_ tensors: [String: Tensor], metadata: [String: String] = [:], to url: URL) throws {
        let dir = url.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
        let names = tensors.keys.sorted()
        for n in names where tensors[n]!.error != nil {
            throw SafetensorsError("\(url.path): tensor '\(n)': \(tensors[n]!.error!.message)")
        }
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for n in names {
            let t = tensors[n]!
            header[n] = ["dtype": t.dtype.safetensorsName, "shape": t.shape, "data_offsets": [offset, offset + t.nbytes]] as [String: Any]
            offset += t.nbytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil), let handle = FileHandle(forWritingAtPath: tmp.path) else {
            throw SafetensorsError("\(url.path): cannot create \(tmp.lastPathComponent) in \(dir.path)")
        }
        do {
            var length = UInt64(json.count).littleEndian
            try handle.write(contentsOf: Data(bytes: &length, count: 8))
            try handle.write(contentsOf: json)
            for n in names {
                do {
                    try handle.write(contentsOf: try tensors[n]!.rawBytes())
                } catch let error as MLXError {
                    throw SafetensorsError("\(url.path): tensor '\(n)': \(error.message)")
                }
            }
            try handle.close()
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(at: tmp)
            if let e = error as? SafetensorsError { throw e }
            throw SafetensorsError("\(url.path): \(error)")
        }
        guard rename(tmp.path, url.path) == 0 else {
            try? FileManager.default.removeItem(at: tmp)
            throw SafetensorsError("\(url.path): could not rename the temporary file into place (errno \(errno))")
        }
    }
}

