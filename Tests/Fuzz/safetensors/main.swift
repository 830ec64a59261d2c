// libFuzzer target: SafeTensorsFile (header parsing and validation, then every accessor).
// Built and run by scripts/fuzz.sh; not a SwiftPM target.
import Foundation
import TTAData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ bytes: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var data = Data(bytes: bytes, count: size)
    // Odd-sized inputs are read through a Data slice that does not start at index 0, as a file
    // image cut out of a larger buffer would be.
    if size % 2 == 1 { data = (Data([0xAA, 0xBB, 0xCC]) + data).dropFirst(3) }
    guard let file = try? SafeTensorsFile(data: data, name: "fuzz.safetensors") else { return 0 }
    for e in file.entries {
        let t = try! file.tensor(e.name)  // validated entries must always be readable
        precondition(t.shape == e.shape && t.storage.count == e.count)
        if let ints = try? file.int64Values(e.name) { precondition(ints.count == e.count) }
        precondition(try! file.rawBytes(e.name).count == e.byteRange.count)
    }
    _ = try? file.entry("no such tensor")
    _ = try? loadStateDict(from: file, expected: file.entries.map { ($0.name, $0.shape) })
    _ = try? loadStateDict(from: file, expected: [("weight", [2, 3])])
    return 0
}
