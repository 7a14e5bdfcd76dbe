import Foundation

// One fuzz target per reader. Built by `make fuzz` with `-sanitize=fuzzer,address -DFUZZING`, `run` hands the
// target to libFuzzer's driver; in an ordinary build it replays the files or folders named on the command line
// (the committed corpus and the reproducers of fixed crashes), which is what the regression test runs.

/// The reader under test, called once per input; it must not crash, whatever the bytes.
nonisolated(unsafe) private var currentBody: ((Data) -> Void)?

/// libFuzzer's entry point: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = count == 0 || bytes == nil ? Data() : Data(bytes: bytes!, count: count)
    currentBody?(data)
    return 0
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                                 _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                                 _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt
#endif

/// How a fuzz target's `main` starts.
public enum FuzzTarget {
    /// Runs `body` on libFuzzer's inputs (fuzzing build) or on every file named on the command line, folders
    /// expanded (ordinary build); never returns.
    public static func run(_ body: @escaping (Data) -> Void) -> Never {
        currentBody = body
        #if FUZZING
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzOneInput($0, $1) })
        #else
        let name = (CommandLine.arguments.first as NSString?)?.lastPathComponent ?? "fuzz target"
        var files: [URL] = []
        for argument in CommandLine.arguments.dropFirst() {
            let url = URL(fileURLWithPath: argument)
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder) else {
                FileHandle.standardError.write(Data("\(name): \(argument): no such file or folder\n".utf8))
                exit(2)
            }
            if isFolder.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
                files += names.sorted().filter { !$0.hasPrefix(".") }.map { url.appendingPathComponent($0) }
            } else {
                files.append(url)
            }
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: file.path) else {
                FileHandle.standardError.write(Data("\(name): \(file.path): not readable\n".utf8))
                exit(2)
            }
            body(data)
        }
        print("\(name): \(files.count) inputs replayed, none crashed")
        exit(0)
        #endif
    }

    /// A folder of this process's own for targets whose reader needs files beside its input (removed at exit
    /// by the operating system's temporary-file cleaning, never shared between processes).
    public static func scratchFolder() -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("janusflow-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }
}
