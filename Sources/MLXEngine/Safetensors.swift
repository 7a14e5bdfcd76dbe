import CMLXShim
import Foundation

/// A problem with a safetensors file; the message names the file and, where it applies, the tensor.
public struct SafetensorsError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Reading and writing `.safetensors` files (all MLX dtypes, bf16 and f16 included).
public enum Safetensors {
    /// What the header says about one tensor.
    public struct Entry: Equatable, Sendable {
        public let dtype: DType
        public let shape: [Int]
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
        let fileSize = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        let prefix = handle.readData(ofLength: 8)
        guard prefix.count == 8 else { throw SafetensorsError("\(path): truncated file (\(fileSize) bytes, no header)") }
        let headerLength = prefix.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard headerLength > 0, headerLength <= 100_000_000, 8 + headerLength <= fileSize else {
            throw SafetensorsError("\(path): truncated or corrupt header (declares \(headerLength) header bytes, file has \(fileSize))")
        }
        let headerData = handle.readData(ofLength: headerLength)
        guard let json = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw SafetensorsError("\(path): header is not a JSON object")
        }
        let dataSize = fileSize - 8 - headerLength
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
            guard let shape = (info["shape"] as? [NSNumber])?.map({ $0.intValue }), shape.allSatisfy({ $0 >= 0 }) else {
                throw SafetensorsError("\(path): tensor '\(name)': missing or invalid shape")
            }
            guard let offsets = (info["data_offsets"] as? [NSNumber])?.map({ $0.intValue }), offsets.count == 2,
                  offsets[0] >= 0, offsets[1] >= offsets[0]
            else { throw SafetensorsError("\(path): tensor '\(name)': missing or invalid data_offsets") }
            let expected = shape.reduce(1, *) * dtype.size
            guard offsets[1] - offsets[0] == expected else {
                throw SafetensorsError("\(path): tensor '\(name)': \(offsets[1] - offsets[0]) bytes for shape \(shape) \(dtypeName) (expected \(expected))")
            }
            guard offsets[1] <= dataSize else {
                throw SafetensorsError("\(path): truncated file: tensor '\(name)' ends at byte \(offsets[1]) of a \(dataSize)-byte data section")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, byteRange: offsets[0]..<offsets[1])
        }
        return (entries, metadata)
    }

    /// Loads every tensor (lazily: data is read when first evaluated) after validating the header.
    public static func load(_ url: URL) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        let (entries, _) = try header(of: url)
        var map = mlxs_tensor_map()
        guard mlxs_load_safetensors(url.path, &map) == 0 else {
            throw SafetensorsError("\(url.path): \(String(cString: mlxs_last_error()))")
        }
        defer { mlxs_tensor_map_free(&map) }
        var tensors: [String: Tensor] = [:]
        for i in 0..<Int(map.count) {
            let name = String(cString: map.names[i]!)
            tensors[name] = Tensor(checked: map.arrays[i])
            map.arrays[i] = nil  // ownership moved to the Tensor
        }
        var metadata: [String: String] = [:]
        for i in 0..<Int(map.metadata_count) {
            metadata[String(cString: map.metadata_keys[i]!)] = String(cString: map.metadata_values[i]!)
        }
        guard Set(tensors.keys) == Set(entries.keys) else {
            throw SafetensorsError("\(url.path): MLX read a different tensor set than the header lists")
        }
        return (tensors, metadata)
    }

    /// Writes tensors atomically: a temporary file in the same folder, then a rename over `url`.
    public static func save(_ tensors: [String: Tensor], metadata: [String: String] = [:], to url: URL) throws {
        let dir = url.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // MLX appends ".safetensors" to names without it, so the temporary name keeps that suffix.
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp.safetensors")
        let names = tensors.keys.sorted()
        var handles: [mlxs_array?] = []
        for n in names {
            guard let h = tensors[n]!.handle else { throw SafetensorsError("\(url.path): tensor '\(n)': \(tensors[n]!.error!.message)") }
            handles.append(h)
        }
        let keys = metadata.keys.sorted()
        let rc = withCStrings(names) { cNames in
            withCStrings(keys) { cKeys in
                withCStrings(keys.map { metadata[$0]! }) { cValues in
                    mlxs_save_safetensors(tmp.path, cNames, handles, Int32(names.count), cKeys, cValues, Int32(keys.count))
                }
            }
        }
        withExtendedLifetime(tensors) {}
        if rc != 0 {
            try? FileManager.default.removeItem(at: tmp)
            throw SafetensorsError("\(url.path): \(String(cString: mlxs_last_error()))")
        }
        guard rename(tmp.path, url.path) == 0 else {
            try? FileManager.default.removeItem(at: tmp)
            throw SafetensorsError("\(url.path): could not rename the temporary file into place (errno \(errno))")
        }
    }
}

func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return body(pointers.map { UnsafePointer($0) })
}
