import Foundation

/// An error reading or writing a data file (`.safetensors`, `.npy`, a state dict).
///
/// Every error names the file (its path, or `"<memory>"` / the name given for in-memory data), the
/// tensor or header field at fault when there is one, and what was expected. Its description reads
/// like `model.safetensors: tensor 'block1.layer.0.bn1.weight': expected shape [160], found [16]`.
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The path of the file, or `"<memory>"` (or a caller-chosen name) for in-memory data.
    public var file: String
    /// The tensor name or header field at fault, if the error concerns one.
    public var key: String?
    /// What `key` is, as printed in the description: `"tensor"`, `"header field"`, `"entry"`…
    public var keyKind: String
    /// What was wrong and what was expected.
    public var message: String

    public init(file: String, key: String? = nil, keyKind: String = "tensor", message: String) {
        self.file = file
        self.key = key
        self.keyKind = keyKind
        self.message = message
    }

    public var description: String {
        if let key {
            return "\(file): \(keyKind) '\(key)': \(message)"
        }
        return "\(file): \(message)"
    }
}

/// The contents of the file at `url` (memory-mapped when `mapped`). A directory, a device or a FIFO is
/// refused before reading (a device like /dev/zero never ends), and any other failure becomes a
/// `DataError` naming the file.
package func readFileContents(_ url: URL, mapped: Bool = true) throws -> Data {
    try requireRegularFile(url)
    do {
        return try Data(contentsOf: url, options: mapped ? .alwaysMapped : [])
    } catch {
        throw DataError(file: url.path, message: "cannot read file: \(error.localizedDescription)")
    }
}

/// Refuses a directory, a device or a FIFO (after symbolic links) before anything reads it: a device like /dev/zero
/// never ends, a FIFO blocks until a writer comes. A path that does not exist passes (the read then fails, naming it).
package func requireRegularFile(_ url: URL) throws {
    let target = url.resolvingSymlinksInPath().path
    if let type = (try? FileManager.default.attributesOfItem(atPath: target)[.type]) as? FileAttributeType,
       type != .typeRegular {
        let kind = switch type {
        case .typeDirectory: "a directory"
        case .typeCharacterSpecial, .typeBlockSpecial: "a device"
        case .typeSocket: "a socket"
        default: "a special file"
        }
        throw DataError(file: url.path, message: "is \(kind); expected a regular file")
    }
}

/// Formats a shape as `[2, 3]`.
@inline(__always)
package func shapeString(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}

/// The product of `dims` (the values a tensor of that shape holds), or nil on overflow or a negative factor.
package func checkedProduct(_ dims: [Int]) -> Int? {
    var p = 1
    for d in dims {
        guard d >= 0 else { return nil }
        let (r, o) = p.multipliedReportingOverflow(by: d)
        if o { return nil }
        p = r
    }
    return p
}
