import Foundation
import TTATensor

/// The `.npy` element types this reader supports: little-endian uint8, int32, int64, float32, float64.
public enum NPYDType: String, Sendable, CaseIterable {
    case uint8 = "|u1", int32 = "<i4", int64 = "<i8", float32 = "<f4", float64 = "<f8"

    /// Bytes per element.
    public var itemSize: Int {
        switch self {
        case .uint8: 1
        case .int32, .float32: 4
        case .int64, .float64: 8
        }
    }

    /// The dtype for a header `descr` string; `|u1` and `<u1` both mean uint8.
    public init?(descr: String) {
        if descr == "<u1" { self = .uint8; return }
        self.init(rawValue: descr)
    }

    var isInteger: Bool { self == .uint8 || self == .int32 || self == .int64 }
}

/// A validated `.npy` header.
public struct NPYHeader: Sendable, Equatable {
    public let dtype: NPYDType
    /// Dimensions, outermost first; `[]` is a 0-d array holding one element.
    public let shape: [Int]
    /// Byte offset of the array data in the file.
    public let dataOffset: Int
    /// Format version: 1, 2 or 3 (minor version is always 0).
    public let majorVersion: Int

    /// Number of elements (`product(shape)`, validated not to overflow).
    public var count: Int { shape.product }
    /// Number of data bytes.
    public var byteCount: Int { count * dtype.itemSize }
}

/// A `.npy` file (NumPy format versions 1.0, 2.0, 3.0), validated when opened and read lazily.
///
/// Only C-order arrays of the dtypes in `NPYDType` are accepted; Fortran order, object (pickled)
/// arrays, big-endian data, structured dtypes and other element types are refused with an error
/// naming the file and the header field. The data size is checked against the file size, so row
/// access cannot read past the end. Bytes after the data are ignored (as `np.load` does).
public struct NPYFile: Sendable {
    /// The path (or the name given for in-memory data) used in error messages.
    public let name: String
    public let header: NPYHeader
    private let data: Data

    /// Header text longer than this is refused (numpy's own default cap is 10,000 characters).
    public static let maxHeaderLength = 1_000_000

    public var dtype: NPYDType { header.dtype }
    public var shape: [Int] { header.shape }
    public var count: Int { header.count }

    /// Opens `url` memory-mapped and validates its header and size.
    public init(contentsOf url: URL) throws {
        try self.init(data: try readFileContents(url), name: url.path)
    }

    /// Same as `init(contentsOf:)`.
    public static func read(_ url: URL) throws -> NPYFile { try NPYFile(contentsOf: url) }

    /// Validates in-memory file contents; `name` is used in error messages.
    public init(data: Data, name: String = "<memory>") throws {
        self.name = name
        self.data = data
        self.header = try Self.parseHeader(data, name: name)
    }

    // MARK: Header parsing

    /// Parses and validates the header of `data` (including that the data fits in `data`).
    public static func parseHeader(_ data: Data, name: String) throws -> NPYHeader {
        func fail(_ m: String, field: String? = nil) -> DataError {
            DataError(file: name, key: field, keyKind: "header field", message: m)
        }
        let size = data.count
        let prefix: [UInt8] = data.withUnsafeBytes { Array($0.prefix(12)) }
        guard size >= 10 else {
            throw fail("file is \(size) bytes, too short for an .npy header (at least 10 bytes); not an .npy file")
        }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard Array(prefix[0..<6]) == magic else {
            throw fail("not an .npy file: expected magic bytes \\x93NUMPY, found \(prefix[0..<6].map { String(format: "%02X", $0) }.joined(separator: " "))")
        }
        let major = Int(prefix[6]), minor = Int(prefix[7])
        guard (1...3).contains(major), minor == 0 else {
            throw fail("unsupported .npy format version \(major).\(minor) (expected 1.0, 2.0 or 3.0)", field: "version")
        }
        let headerLength: Int
        let lengthSize = major == 1 ? 2 : 4
        guard size >= 8 + lengthSize else {
            throw fail("file is \(size) bytes, too short for a version \(major).0 header length", field: "header_len")
        }
        if major == 1 {
            headerLength = Int(UInt16(prefix[8]) | UInt16(prefix[9]) << 8)
        } else {
            headerLength = Int(UInt32(prefix[8]) | UInt32(prefix[9]) << 8 | UInt32(prefix[10]) << 16 | UInt32(prefix[11]) << 24)
        }
        guard headerLength <= maxHeaderLength else {
            throw fail("header length \(headerLength) exceeds the limit of \(maxHeaderLength) bytes", field: "header_len")
        }
        let dataOffset = 8 + lengthSize + headerLength
        guard dataOffset <= size else {
            throw fail("header length \(headerLength) runs past the end of the file: the header would end at byte \(dataOffset) but the file is \(size) bytes", field: "header_len")
        }
        let text: [UInt8] = data.withUnsafeBytes { Array($0[(8 + lengthSize)..<dataOffset]) }

        var parser = PyLiteralParser(bytes: text)
        let dict: [(String, PyValue)]
        do {
            dict = try parser.parseHeaderDict()
        } catch let e as PyLiteralError {
            throw fail("header is not a valid Python dict literal: \(e.message) at byte \(e.offset) of the header", field: e.field)
        }

        var values: [String: PyValue] = [:]
        for (k, v) in dict {
            guard values[k] == nil else { throw fail("appears twice in the header dict", field: k) }
            guard ["descr", "fortran_order", "shape"].contains(k) else {
                throw fail("unexpected key in the header dict (expected exactly 'descr', 'fortran_order', 'shape')", field: k)
            }
            values[k] = v
        }
        for k in ["descr", "fortran_order", "shape"] where values[k] == nil {
            throw fail("missing from the header dict (expected exactly 'descr', 'fortran_order', 'shape')", field: k)
        }

        // descr
        guard case .string(let descr)? = values["descr"] else {
            if case .list? = values["descr"] {
                throw fail("structured dtypes (a list of fields) are not supported; expected one of \(supportedList)", field: "descr")
            }
            throw fail("must be a dtype string like '<f4', found \(values["descr"]?.shortDescription ?? "nothing")", field: "descr")
        }
        guard let dtype = NPYDType(descr: descr) else {
            let kind = descr.count >= 2 ? descr.dropFirst() : Substring(descr)
            if descr == "O" || kind == "O" {
                throw fail("dtype '\(descr)' holds Python objects stored as a pickle; pickled .npy files are refused (they can run code)", field: "descr")
            }
            if descr.hasPrefix(">") {
                throw fail("big-endian dtype '\(descr)' is not supported; expected little-endian, one of \(supportedList) (convert with a.astype(a.dtype.newbyteorder('<')))", field: "descr")
            }
            throw fail("unsupported dtype '\(descr)'; expected one of \(supportedList)", field: "descr")
        }

        // fortran_order
        guard case .bool(let fortran)? = values["fortran_order"] else {
            throw fail("must be True or False, found \(values["fortran_order"]?.shortDescription ?? "nothing")", field: "fortran_order")
        }
        if fortran {
            throw fail("Fortran-order (column-major) arrays are not supported; expected False (save np.ascontiguousarray(a) instead)", field: "fortran_order")
        }

        // shape
        guard case .tuple(let dims)? = values["shape"] else {
            throw fail("must be a tuple of non-negative integers, found \(values["shape"]?.shortDescription ?? "nothing")", field: "shape")
        }
        var shape: [Int] = []
        for (i, d) in dims.enumerated() {
            guard case .int(let text) = d else {
                throw fail("dimension \(i) must be a non-negative integer, found \(d.shortDescription)", field: "shape")
            }
            guard !text.hasPrefix("-") else {
                throw fail("dimension \(i) is negative (\(text))", field: "shape")
            }
            guard let v = Int(text) else {
                throw fail("dimension \(i) (\(text)) is too large", field: "shape")
            }
            shape.append(v)
        }
        let shapeText = "(" + shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? ",)" : ")")
        guard let count = checkedProduct(shape) else {
            throw fail("element count of shape \(shapeText) overflows", field: "shape")
        }
        let (nbytes, overflow) = count.multipliedReportingOverflow(by: dtype.itemSize)
        guard !overflow else {
            throw fail("byte size of shape \(shapeText) with dtype \(descr) overflows", field: "shape")
        }
        let available = size - dataOffset
        guard nbytes <= available else {
            throw fail("data is truncated: shape \(shapeText) of \(descr) needs \(nbytes) bytes after the \(dataOffset)-byte header, but the file has only \(available) (file is \(size) bytes)", field: "shape")
        }
        return NPYHeader(dtype: dtype, shape: shape, dataOffset: dataOffset, majorVersion: major)
    }

    private static var supportedList: String {
        "'|u1' (or '<u1'), '<i4', '<i8', '<f4', '<f8'"
    }

    // MARK: Access

    /// All elements converted to Float (C order).
    public func floats() throws -> [Float] {
        decode(byteOffset: header.dataOffset, count: count)
    }

    /// The whole array as a `Tensor` (elements converted to Float).
    public func tensor() throws -> Tensor {
        Tensor(shape: shape, storage: try floats())
    }

    /// All elements as Int. Needs an integer dtype (`|u1`, `<i4`, `<i8`).
    public func ints() throws -> [Int] {
        guard dtype.isInteger else {
            throw DataError(file: name, key: "descr", keyKind: "header field",
                            message: "expected an integer dtype ('|u1', '<i4' or '<i8') to read integers, found '\(dtype.rawValue)'")
        }
        let n = count
        let offset = header.dataOffset
        return data.withUnsafeBytes { raw in
            var out = [Int](repeating: 0, count: n)
            switch dtype {
            case .uint8: for i in 0..<n { out[i] = Int(raw[offset + i]) }
            case .int32:
                for i in 0..<n { out[i] = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4 * i, as: Int32.self))) }
            case .int64:
                for i in 0..<n { out[i] = Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 8 * i, as: Int64.self))) }
            default: break
            }
            return out
        }
    }

    /// Elements per row of the outermost dimension, and the byte offset of `rows`, after checking them.
    private func rowSpan(_ rows: Range<Int>) throws -> (start: Int, count: Int) {
        guard let n = shape.first else {
            throw DataError(file: name, key: "shape", keyKind: "header field",
                            message: "a 0-d array has no rows; expected at least 1 dimension")
        }
        guard rows.lowerBound >= 0, rows.upperBound <= n else {
            throw DataError(file: name, key: "shape", keyKind: "header field",
                            message: "rows \(rows.lowerBound)..<\(rows.upperBound) are out of range: the array has \(n) rows (shape \(shapeString(shape)))")
        }
        // With no rows, only the empty range passes the check above; the other dimensions may then
        // multiply past Int.max (shape (0, 2**40, 2**40) holds no bytes), so their product is not formed.
        guard n > 0 else { return (header.dataOffset, 0) }
        let perRow = Array(shape.dropFirst()).product  // at most the validated total when there are rows
        return (header.dataOffset + rows.lowerBound * perRow * dtype.itemSize, rows.count * perRow)
    }

    /// The raw bytes of `rows` of the outermost dimension (uint8 arrays only), without touching the
    /// rest of the file. This is how large CIFAR-C arrays are streamed batch by batch.
    public func uint8Rows(_ rows: Range<Int>) throws -> [UInt8] {
        guard dtype == .uint8 else {
            throw DataError(file: name, key: "descr", keyKind: "header field",
                            message: "expected dtype '|u1' (uint8) for raw byte rows, found '\(dtype.rawValue)'")
        }
        let (start, n) = try rowSpan(rows)
        return data.withUnsafeBytes { raw in Array(raw[start..<(start + n)]) }
    }

    /// `rows` of the outermost dimension, converted to Float.
    public func rowsAsFloats(_ rows: Range<Int>) throws -> [Float] {
        let (start, n) = try rowSpan(rows)
        return decode(byteOffset: start, count: n)
    }

    private func decode(byteOffset: Int, count n: Int) -> [Float] {
        data.withUnsafeBytes { raw in
            [Float](unsafeUninitializedCapacity: n) { out, initialized in
                switch dtype {
                case .uint8:
                    for i in 0..<n { out[i] = Float(raw[byteOffset + i]) }
                case .float32:
                    #if _endian(little)
                    if n > 0, let dst = out.baseAddress, let src = raw.baseAddress {
                        UnsafeMutableRawPointer(dst).copyMemory(from: src + byteOffset, byteCount: 4 * n)
                    }
                    #else
                    for i in 0..<n {
                        out[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: byteOffset + 4 * i, as: UInt32.self)))
                    }
                    #endif
                case .float64:
                    for i in 0..<n {
                        out[i] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: byteOffset + 8 * i, as: UInt64.self))))
                    }
                case .int32:
                    for i in 0..<n { out[i] = Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: byteOffset + 4 * i, as: Int32.self))) }
                case .int64:
                    for i in 0..<n { out[i] = Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: byteOffset + 8 * i, as: Int64.self))) }
                }
                initialized = n
            }
        }
    }

    // MARK: Writing

    /// The header bytes numpy 2 writes for a C-order array (`np.save`): version 1.0 (2.0 if it would
    /// not fit), keys sorted, a trailing comma, 21 − len(repr(shape[0])) spare spaces, then spaces
    /// and a final `\n` so the total header is a multiple of 64 bytes.
    public static func encodeHeader(dtype: NPYDType, shape: [Int]) -> [UInt8] {
        let shapeRepr = "(" + shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? ",)" : ")")
        var dict = "{'descr': '\(dtype.rawValue)', 'fortran_order': False, 'shape': \(shapeRepr), }"
        if let first = shape.first {
            dict += String(repeating: " ", count: max(0, 21 - String(first).count))
        }
        let body = Array(dict.utf8)
        for (major, lengthSize) in [(1, 2), (2, 4)] {
            let hlen = body.count + 1
            let padlen = 64 - ((8 + lengthSize + hlen) % 64)
            let total = hlen + padlen
            if lengthSize == 2 && total > 0xFFFF { continue }
            var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, UInt8(major), 0]
            for k in 0..<lengthSize { out.append(UInt8(truncatingIfNeeded: total >> (8 * k))) }
            out += body
            out += repeatElement(UInt8(ascii: " "), count: padlen)
            out.append(UInt8(ascii: "\n"))
            return out
        }
        return []  // unreachable: a version 2.0 header always fits
    }

    /// A complete `.npy` image: header for `dtype`/`shape`, then `payload` (little-endian elements).
    static func encode(dtype: NPYDType, shape: [Int], elementCount: Int, name: String,
                       payload: (inout Data) -> Void) throws -> Data {
        guard let n = checkedProduct(shape) else {
            throw DataError(file: name, key: "shape", keyKind: "header field",
                            message: "shape \(shapeString(shape)) has a negative dimension or overflows")
        }
        guard n == elementCount else {
            throw DataError(file: name, key: "shape", keyKind: "header field",
                            message: "shape \(shapeString(shape)) needs \(n) elements, got \(elementCount)")
        }
        let header = encodeHeader(dtype: dtype, shape: shape)
        var data = Data(capacity: header.count + n * dtype.itemSize)
        data.append(contentsOf: header)
        payload(&data)
        return data
    }

    /// `.npy` bytes for float32 values.
    public static func encode(floats: [Float], shape: [Int], name: String = "<memory>") throws -> Data {
        try encode(dtype: .float32, shape: shape, elementCount: floats.count, name: name) { data in
            #if _endian(little)
            floats.withUnsafeBytes { data.append(contentsOf: $0) }
            #else
            for v in floats { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
            #endif
        }
    }

    /// `.npy` bytes for uint8 values.
    public static func encode(uint8: [UInt8], shape: [Int], name: String = "<memory>") throws -> Data {
        try encode(dtype: .uint8, shape: shape, elementCount: uint8.count, name: name) { data in
            data.append(contentsOf: uint8)
        }
    }

    /// `.npy` bytes for int64 values.
    public static func encode(int64: [Int64], shape: [Int], name: String = "<memory>") throws -> Data {
        try encode(dtype: .int64, shape: shape, elementCount: int64.count, name: name) { data in
            #if _endian(little)
            int64.withUnsafeBytes { data.append(contentsOf: $0) }
            #else
            for v in int64 { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
            #endif
        }
    }

    /// Writes float32 values as a version 1.0 `.npy` file, atomically, byte-identical to `np.save`.
    public static func write(floats: [Float], shape: [Int], to url: URL) throws {
        try writeAtomically(try encode(floats: floats, shape: shape, name: url.path), to: url)
    }

    /// Writes uint8 values as a version 1.0 `.npy` file (`|u1`), atomically.
    public static func write(uint8: [UInt8], shape: [Int], to url: URL) throws {
        try writeAtomically(try encode(uint8: uint8, shape: shape, name: url.path), to: url)
    }

    /// Writes int64 values as a version 1.0 `.npy` file (`<i8`), atomically.
    public static func write(int64: [Int64], shape: [Int], to url: URL) throws {
        try writeAtomically(try encode(int64: int64, shape: shape, name: url.path), to: url)
    }

    /// Writes a tensor as float32, atomically.
    public static func write(_ tensor: Tensor, to url: URL) throws {
        try write(floats: tensor.storage, shape: tensor.shape, to: url)
    }
}

// MARK: - Python literal parsing (the header dict)

enum PyValue {
    case string(String)
    /// Integer literal text: optional '-', digits (a Python 2 'L' suffix already stripped).
    case int(String)
    case bool(Bool)
    case none
    case tuple([PyValue])
    case list

    var shortDescription: String {
        switch self {
        case .string(let s): return "'\(s.count > 40 ? String(s.prefix(40)) + "…" : s)'"
        case .int(let t): return t.count > 40 ? String(t.prefix(40)) + "…" : t
        case .bool(let b): return b ? "True" : "False"
        case .none: return "None"
        case .tuple(let items):
            let inner = items.prefix(4).map(\.shortDescription).joined(separator: ", ")
            return "(" + inner + (items.count > 4 ? ", …" : "") + (items.count == 1 ? ",)" : ")")
        case .list: return "a list"
        }
    }
}

struct PyLiteralError: Error {
    var message: String
    var offset: Int
    var field: String?
}

/// Parses the restricted Python literal numpy writes: `{'key': value, ...}` with string keys and
/// values that are strings, ints (optional `L`), True/False/None, or tuples of those. A list value
/// is recognised (structured dtypes) but not parsed. Only whitespace may follow the closing brace.
struct PyLiteralParser {
    let bytes: [UInt8]
    var pos = 0
    var depth = 0
    var currentKey: String? = nil

    init(bytes: [UInt8]) { self.bytes = bytes }

    private func error(_ m: String) -> PyLiteralError { PyLiteralError(message: m, offset: pos, field: currentKey) }

    private func describe(_ b: UInt8) -> String {
        (0x21...0x7E).contains(b) ? "'\(Character(Unicode.Scalar(b)))'" : "byte 0x\(String(b, radix: 16, uppercase: true))"
    }

    private mutating func skipWhitespace() {
        while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x0A || bytes[pos] == 0x0D || bytes[pos] == 0x09 {
            pos += 1
        }
    }

    private mutating func expect(_ c: Character) throws {
        skipWhitespace()
        guard pos < bytes.count else { throw error("unexpected end of header, expected '\(c)'") }
        guard bytes[pos] == c.asciiValue else { throw error("expected '\(c)', found \(describe(bytes[pos]))") }
        pos += 1
    }

    private mutating func peek() -> UInt8? {
        skipWhitespace()
        return pos < bytes.count ? bytes[pos] : nil
    }

    mutating func parseHeaderDict() throws -> [(String, PyValue)] {
        try expect("{")
        var items: [(String, PyValue)] = []
        while true {
            guard let c = peek() else { throw error("unexpected end of header inside the dict") }
            if c == UInt8(ascii: "}") { pos += 1; break }
            guard c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") else {
                throw error("expected a quoted key or '}', found \(describe(c))")
            }
            let key = try parseString()
            currentKey = key
            try expect(":")
            let value = try parseValue()
            items.append((key, value))
            currentKey = nil
            guard let next = peek() else { throw error("unexpected end of header inside the dict") }
            if next == UInt8(ascii: ",") { pos += 1; continue }
            if next == UInt8(ascii: "}") { pos += 1; break }
            throw error("expected ',' or '}', found \(describe(next))")
        }
        skipWhitespace()
        if pos < bytes.count {
            throw error("unexpected \(describe(bytes[pos])) after the closing '}' (only spaces and a newline may follow)")
        }
        return items
    }

    private mutating func parseValue() throws -> PyValue {
        guard let c = peek() else { throw error("unexpected end of header, expected a value") }
        switch c {
        case UInt8(ascii: "'"), UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "("): return try parseTuple()
        case UInt8(ascii: "["): try skipList(); return .list
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseInt()
        default:
            var word = ""
            while pos < bytes.count, word.count <= 16 {
                let s = bytes[pos]
                guard (s >= 0x41 && s <= 0x5A) || (s >= 0x61 && s <= 0x7A) || s == 0x5F else { break }
                word.append(Character(Unicode.Scalar(s)))
                pos += 1
            }
            switch word {
            case "True": return .bool(true)
            case "False": return .bool(false)
            case "None": return .none
            case "": throw error("unexpected \(describe(c))")
            default: throw error("unsupported value '\(word)'")
            }
        }
    }

    /// Skips a bracketed list (a structured dtype's field list), minding nested brackets and strings.
    private mutating func skipList() throws {
        var level = 0
        while pos < bytes.count {
            let c = bytes[pos]
            if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") {
                _ = try parseString()
                continue
            }
            pos += 1
            if c == UInt8(ascii: "[") || c == UInt8(ascii: "(") { level += 1 }
            if c == UInt8(ascii: "]") || c == UInt8(ascii: ")") {
                level -= 1
                if level == 0 { return }
            }
        }
        throw error("unexpected end of header inside a list")
    }

    private mutating func parseTuple() throws -> PyValue {
        depth += 1
        defer { depth -= 1 }
        if depth > 32 { throw error("tuples nested too deeply") }
        pos += 1  // (
        var items: [PyValue] = []
        var sawComma = false
        while true {
            guard let c = peek() else { throw error("unexpected end of header inside a tuple") }
            if c == UInt8(ascii: ")") { pos += 1; break }
            items.append(try parseValue())
            guard let next = peek() else { throw error("unexpected end of header inside a tuple") }
            if next == UInt8(ascii: ",") { pos += 1; sawComma = true; continue }
            if next == UInt8(ascii: ")") { pos += 1; break }
            throw error("expected ',' or ')' in a tuple, found \(describe(next))")
        }
        // `(5)` is just the int 5 in Python, not a tuple.
        if items.count == 1 && !sawComma { return items[0] }
        return .tuple(items)
    }

    private mutating func parseInt() throws -> PyValue {
        let start = pos
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        let digitsStart = pos
        while pos < bytes.count, bytes[pos] >= 0x30 && bytes[pos] <= 0x39 { pos += 1 }
        guard pos > digitsStart else { throw error("invalid integer") }
        let text = String(decoding: bytes[start..<pos], as: UTF8.self)
        // Python 2 long suffix.
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "L") || bytes[pos] == UInt8(ascii: "l") { pos += 1 }
        if pos < bytes.count, (bytes[pos] >= 0x41 && bytes[pos] <= 0x5A) || (bytes[pos] >= 0x61 && bytes[pos] <= 0x7A) || bytes[pos] == UInt8(ascii: ".") {
            throw error("invalid integer literal (unexpected \(describe(bytes[pos])))")
        }
        return .int(text)
    }

    private mutating func parseString() throws -> String {
        let quote = bytes[pos]
        pos += 1
        var out: [UInt8] = []
        while true {
            guard pos < bytes.count else { throw error("unterminated string") }
            let c = bytes[pos]
            if c == quote { pos += 1; break }
            if c == 0x0A { throw error("newline inside a string") }
            if c == UInt8(ascii: "\\") {
                guard pos + 1 < bytes.count else { throw error("unterminated string") }
                out.append(bytes[pos + 1])
                pos += 2
                continue
            }
            out.append(c)
            pos += 1
        }
        // v1/v2 headers are latin1, v3 UTF-8; dtype strings are ASCII either way.
        return String(decoding: out, as: UTF8.self)
    }
}
