// libFuzzer target: NPYFile (header parsing and validation, then every accessor).
// Built and run by scripts/fuzz.sh; not a SwiftPM target.
import Foundation
import TTAData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNPY(_ bytes: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var data = Data(bytes: bytes, count: size)
    // Odd-sized inputs are read through a Data slice that does not start at index 0.
    if size % 2 == 1 { data = (Data([0xAA, 0xBB, 0xCC]) + data).dropFirst(3) }
    guard let file = try? NPYFile(data: data, name: "fuzz.npy") else { return 0 }
    let floats = try! file.floats()  // a validated header must always be readable
    precondition(floats.count == file.count)
    let t = try! file.tensor()
    precondition(t.shape == file.shape)
    if let ints = try? file.ints() { precondition(ints.count == file.count) }
    if let rows = file.shape.first {
        for r in [0..<0, 0..<min(rows, 1), 0..<min(rows, 3), max(rows - 1, 0)..<rows, 0..<rows, rows..<(rows + 1)] {
            _ = try? file.rowsAsFloats(r)
            _ = try? file.uint8Rows(r)
        }
    } else {
        _ = try? file.rowsAsFloats(0..<1)
    }
    return 0
}
