import Foundation
import TTATensor

// MARK: - Reading

/// A `.safetensors` file (huggingface/safetensors format), fully validated when opened.
///
/// Layout: an 8-byte little-endian header length `N`, `N` bytes of UTF-8 JSON (starting with `{`,
/// possibly padded with trailing spaces), then the byte buffer. The header maps tensor names to
/// `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the byte buffer), plus an
/// optional `"__metadata__"` string→string map.
///
/// Opening checks everything the reference Rust parser checks, and a little more: the header cap
/// (100 MB), UTF-8, strict JSON (parsed by a small strict parser here, which also catches duplicate
/// keys that `JSONSerialization` would silently merge), entry field types, known and supported
/// dtypes, shape-product overflow, `end - begin == product(shape) * dtypeSize`, and that the tensors
/// tile the byte buffer exactly (starting at 0, no gaps, no overlaps, ending at the end of the file).
/// After that, `tensor(_:)` cannot read out of bounds.
public struct SafeTensorsFile: Sendable {
    /// One tensor's header entry.
    public struct Entry: Sendable, Equatable {
        /// The tensor name as stored in the file (no prefix stripping).
        public let name: String
        /// The dtype string as stored, e.g. `"F32"`, `"BF16"`, `"I64"`.
        public let dtype: String
        /// Dimensions, outermost first. `[]` is a scalar.
        public let shape: [Int]
        /// `data_offsets` as a range, relative to the start of the byte buffer (see `dataStart`).
        public let byteRange: Range<Int>

        /// Number of elements (`product(shape)`).
        public var count: Int { shape.product }
    }

    /// The path (or the name given for in-memory data) used in error messages.
    public let name: String
    /// All tensors, sorted by data offset (then by name, for empty tensors sharing an offset).
    public let entries: [Entry]
    /// The `__metadata__` map (empty when absent).
    public let metadata: [String: String]
    /// `N`, the JSON header length in bytes.
    public let headerLength: Int
    /// File offset of the byte buffer: `8 + headerLength`.
    public var dataStart: Int { 8 + headerLength }
    /// Tensor names, in `entries` order (by data offset).
    public var names: [String] { entries.map(\.name) }

    private let data: Data
    private let index: [String: Int]

    /// Largest header the reference implementation accepts.
    public static let maxHeaderLength = 100_000_000

    /// What a file that is not a safetensors file is, from its first bytes, when it is a format often given
    /// in its place, with how to convert it: a NumPy `.npy` array (`\x93NUMPY`), a PyTorch `.pt`/`.pth`
    /// checkpoint (a zip archive, `PK\x03\x04`, or before PyTorch 1.6 a pickle, `\x80` and the protocol).
    /// Nil for anything else.
    static func formatGuess(_ data: Data) -> String? {
        let head = Array(data.prefix(8))
        let convert = "convert a PyTorch state dict with "
            + "`safetensors.torch.save_file(torch.load(\"model.pt\"), \"model.safetensors\")`"
        if head.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) {
            return "a NumPy .npy array (it starts with \\x93NUMPY)"
        }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
            return "a zip archive (it starts with PK\\x03\\x04), as PyTorch saves .pt/.pth checkpoints; \(convert)"
        }
        if head.count >= 2, head[0] == 0x80, (2...5).contains(head[1]) {
            return "a Python pickle (it starts with \\x80\\x0\(head[1])), as PyTorch before 1.6 saved .pt/.pth checkpoints; \(convert)"
        }
        return nil
    }

    /// Opens and validates `url` (memory-mapped).
    public static func read(_ url: URL) throws -> SafeTensorsFile {
        try SafeTensorsFile(data: try readFileContents(url), name: url.path)
    }

    /// Validates in-memory file contents; `name` is used in error messages.
    public init(data: Data, name: String = "<memory>") throws {
        self.name = name
        self.data = data
        func fail(_ message: String, key: String? = nil, kind: String = "tensor") -> DataError {
            DataError(file: name, key: key, keyKind: kind, message: message)
        }

        // A file that fails the framing is most often another format given by mistake: name it when it is a
        // common one (a NumPy array, a PyTorch checkpoint), else say what is wrong with the framing.
        func notSafeTensors(_ detail: String, _ what: String = "not a safetensors file") -> DataError {
            fail(Self.formatGuess(data).map { "not a safetensors file but \($0)" } ?? "\(what) (\(detail))")
        }
        let fileSize = data.count
        guard fileSize >= 8 else {
            throw notSafeTensors("file is \(fileSize) bytes, shorter than the 8-byte header-length prefix")
        }
        let n64: UInt64 = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n64 <= UInt64(Self.maxHeaderLength) else {
            throw notSafeTensors("header length \(n64) exceeds the limit of \(Self.maxHeaderLength) bytes")
        }
        let n = Int(n64)
        guard 8 + n <= fileSize else {
            throw notSafeTensors("header length \(n) runs past the end of the file: the header would end at byte \(8 + n) "
                                 + "but the file is \(fileSize) bytes", "not a safetensors file, or a truncated one")
        }
        guard n > 0 else { throw notSafeTensors("header length 0; the header is a JSON object starting with '{'") }
        self.headerLength = n

        let headerBytes: [UInt8] = data.withUnsafeBytes { Array($0[8..<(8 + n)]) }
        if let bad = firstInvalidUTF8Offset(headerBytes) {
            throw notSafeTensors("invalid byte at offset \(bad) of the header", "header is not valid UTF-8")
        }
        guard headerBytes[0] == UInt8(ascii: "{") else {
            throw notSafeTensors("the header starts with byte 0x\(String(headerBytes[0], radix: 16, uppercase: true)); "
                                 + "a safetensors header is a JSON object, starting with '{' (byte 0x7B)")
        }
        let root: JSONValue
        do {
            var parser = StrictJSONParser(bytes: headerBytes)
            root = try parser.parseDocument()
        } catch let e as JSONSyntaxError {
            throw fail("header is not valid JSON: \(e.message) at byte \(e.offset) of the header")
        }
        guard case .object(let members) = root else {
            throw fail("header is not a JSON object")
        }

        var seen = Set<String>()
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        entries.reserveCapacity(members.count)
        for (key, value) in members {
            guard seen.insert(key).inserted else {
                throw fail("duplicate tensor name in header; each name must appear once", key: key)
            }
            if key == "__metadata__" {
                guard case .object(let pairs) = value else {
                    throw fail("must be a JSON object mapping strings to strings, found \(value.kindName)",
                               key: key, kind: "header field")
                }
                for (mk, mv) in pairs {
                    guard metadata[mk] == nil else {
                        throw fail("duplicate metadata key '\(mk)'", key: key, kind: "header field")
                    }
                    guard case .string(let s) = mv else {
                        throw fail("value of metadata key '\(mk)' must be a string, found \(mv.kindName)",
                                   key: key, kind: "header field")
                    }
                    metadata[mk] = s
                }
                continue
            }
            entries.append(try Self.parseEntry(name: key, value: value, fail: fail))
        }

        entries.sort {
            ($0.byteRange.lowerBound, $0.byteRange.upperBound, $0.name)
                < ($1.byteRange.lowerBound, $1.byteRange.upperBound, $1.name)
        }
        var position = 0
        var previous: String? = nil
        for e in entries {
            if e.byteRange.lowerBound != position {
                if let previous {
                    let what = e.byteRange.lowerBound < position ? "overlaps" : "leaves a gap after"
                    throw fail("data_offsets [\(e.byteRange.lowerBound), \(e.byteRange.upperBound)] \(what) tensor '\(previous)', which ends at \(position); tensors must tile the byte buffer contiguously", key: e.name)
                }
                throw fail("data_offsets [\(e.byteRange.lowerBound), \(e.byteRange.upperBound)]: the first tensor must start at offset 0 of the byte buffer", key: e.name)
            }
            position = e.byteRange.upperBound
            previous = e.name
        }
        let bufferSize = fileSize - 8 - n
        if position != bufferSize {
            let detail = "tensors index \(position) bytes of the byte buffer, but the file holds \(bufferSize) bytes after the header (file is \(fileSize) bytes); the buffer must be entirely indexed"
            if let previous { throw fail(detail + " (last tensor ends at \(position))", key: previous) }
            throw fail(detail)
        }

        self.entries = entries
        self.metadata = metadata
        var index: [String: Int] = [:]
        for (i, e) in entries.enumerated() { index[e.name] = i }
        self.index = index
    }

    private static func parseEntry(name: String, value: JSONValue,
                                   fail: (String, String?, String) -> DataError) throws -> Entry {
        func bad(_ m: String) -> DataError { fail(m, name, "tensor") }
        guard case .object(let fields) = value else {
            throw bad("header entry must be a JSON object with dtype, shape and data_offsets, found \(value.kindName)")
        }
        var dict: [String: JSONValue] = [:]
        for (k, v) in fields {
            guard dict[k] == nil else { throw bad("duplicate field '\(k)' in header entry") }
            dict[k] = v
        }
        guard let dtypeValue = dict["dtype"] else { throw bad("header entry is missing field 'dtype'") }
        guard case .string(let dtypeName) = dtypeValue else {
            throw bad("field 'dtype' must be a string, found \(dtypeValue.kindName)")
        }
        guard let shapeValue = dict["shape"] else { throw bad("header entry is missing field 'shape'") }
        guard case .array(let dimValues) = shapeValue else {
            throw bad("field 'shape' must be an array of non-negative integers, found \(shapeValue.kindName)")
        }
        var shape: [Int] = []
        shape.reserveCapacity(dimValues.count)
        for (i, d) in dimValues.enumerated() {
            guard let v = d.nonNegativeInt else {
                throw bad("field 'shape': dimension \(i) must be a non-negative integer, found \(d.shortDescription)")
            }
            shape.append(v)
        }
        guard let offValue = dict["data_offsets"] else { throw bad("header entry is missing field 'data_offsets'") }
        guard case .array(let offs) = offValue, offs.count == 2 else {
            throw bad("field 'data_offsets' must be an array of 2 non-negative integers [begin, end], found \(offValue.shortDescription)")
        }
        guard let begin = offs[0].nonNegativeInt, let end = offs[1].nonNegativeInt else {
            throw bad("field 'data_offsets' must be an array of 2 non-negative integers [begin, end], found \(offValue.shortDescription)")
        }
        guard begin <= end else {
            throw bad("field 'data_offsets' [\(begin), \(end)]: begin is after end")
        }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
            throw bad("unknown dtype '\(dtypeName)' (known: \(SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard dtype.isSupported else {
            throw bad("dtype \(dtypeName) is not supported (supported: \(SafeTensorsDType.allCases.filter(\.isSupported).map(\.rawValue).joined(separator: ", ")))")
        }
        guard let count = checkedProduct(shape) else {
            throw bad("shape \(shapeString(shape)): element count overflows")
        }
        let (nbytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow else {
            throw bad("shape \(shapeString(shape)) of \(dtypeName): byte size overflows")
        }
        guard end - begin == nbytes else {
            throw bad("shape \(shapeString(shape)) of \(dtypeName) needs \(nbytes) bytes (\(count) × \(dtype.byteSize)), but data_offsets [\(begin), \(end)] span \(end - begin) bytes")
        }
        return Entry(name: name, dtype: dtypeName, shape: shape, byteRange: begin..<end)
    }

    /// The header entry for `name`.
    public func entry(_ name: String) throws -> Entry {
        guard let i = index[name] else {
            var known = entries.prefix(5).map { "'\($0.name)'" }.joined(separator: ", ")
            if entries.count > 5 { known += " and \(entries.count - 5) more" }
            throw DataError(file: self.name, key: name,
                            message: "no such tensor in the file (it has \(entries.count) tensors\(entries.isEmpty ? "" : ": " + known))")
        }
        return entries[i]
    }

    /// True when the file has a tensor called `name`.
    public func contains(_ name: String) -> Bool { index[name] != nil }

    /// The tensor `name`, converted to `Float` from any supported dtype.
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        guard let dtype = SafeTensorsDType(rawValue: e.dtype) else {
            throw DataError(file: self.name, key: name, message: "unknown dtype '\(e.dtype)'")
        }
        let count = e.count
        let start = dataStart + e.byteRange.lowerBound
        let storage: [Float] = data.withUnsafeBytes { raw in
            let src = UnsafeRawBufferPointer(rebasing: raw[start..<(start + e.byteRange.count)])
            return decodeToFloats(src, dtype: dtype, count: count)
        }
        return Tensor(shape: e.shape, storage: storage)
    }

    /// The values of an integer or BOOL tensor (e.g. `num_batches_tracked`, I64), widened to `Int64`.
    public func int64Values(_ name: String) throws -> [Int64] {
        let e = try entry(name)
        guard let dtype = SafeTensorsDType(rawValue: e.dtype), dtype.isInteger else {
            throw DataError(file: self.name, key: name,
                            message: "expected an integer or BOOL dtype, found \(e.dtype)")
        }
        let count = e.count
        let start = dataStart + e.byteRange.lowerBound
        var result = [Int64](repeating: 0, count: count)
        var tooLarge: UInt64? = nil
        data.withUnsafeBytes { raw in
            let src = UnsafeRawBufferPointer(rebasing: raw[start..<(start + e.byteRange.count)])
            for i in 0..<count {
                switch dtype {
                case .i64: result[i] = Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
                case .u64:
                    let v = UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                    if v > UInt64(Int64.max) { if tooLarge == nil { tooLarge = v } } else { result[i] = Int64(v) }
                case .i32: result[i] = Int64(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                case .u32: result[i] = Int64(UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                case .i16: result[i] = Int64(Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
                case .u16: result[i] = Int64(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                case .i8: result[i] = Int64(Int8(bitPattern: src[i]))
                case .u8: result[i] = Int64(src[i])
                case .bool: result[i] = src[i] != 0 ? 1 : 0
                default: break
                }
            }
        }
        if let tooLarge {
            throw DataError(file: self.name, key: name, message: "U64 value \(tooLarge) does not fit in Int64")
        }
        return result
    }

    /// The raw little-endian bytes of tensor `name`, as stored.
    public func rawBytes(_ name: String) throws -> Data {
        let e = try entry(name)
        let start = data.startIndex + dataStart + e.byteRange.lowerBound
        return data.subdata(in: start..<(start + e.byteRange.count))
    }
}

/// The dtypes of the safetensors format (ordered as in the reference enum).
enum SafeTensorsDType: String, CaseIterable, Sendable {
    case bool = "BOOL", f4 = "F4", f6e2m3 = "F6_E2M3", f6e3m2 = "F6_E3M2", u8 = "U8", i8 = "I8"
    case f8e5m2 = "F8_E5M2", f8e4m3 = "F8_E4M3", f8e8m0 = "F8_E8M0", f8e4m3fnuz = "F8_E4M3FNUZ"
    case f8e5m2fnuz = "F8_E5M2FNUZ", i16 = "I16", u16 = "U16", f16 = "F16", bf16 = "BF16", i32 = "I32"
    case u32 = "U32", f32 = "F32", c64 = "C64", f64 = "F64", i64 = "I64", u64 = "U64"

    /// Bytes per element (only meaningful for supported dtypes; sub-byte ones report 1).
    var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f4, .f6e2m3, .f6e3m2, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz: 1
        case .i16, .u16, .f16, .bf16: 2
        case .i32, .u32, .f32: 4
        case .c64, .f64, .i64, .u64: 8
        }
    }

    /// Dtypes this reader converts to Float.
    var isSupported: Bool {
        switch self {
        case .f4, .f6e2m3, .f6e3m2, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz, .c64: false
        default: true
        }
    }

    var isInteger: Bool {
        switch self {
        case .bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64: true
        default: false
        }
    }
}

/// IEEE half (binary16) bits to Float, exactly (NaN payloads kept).
@inline(__always)
func halfBitsToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0 {
        if mantissa == 0 { return Float(bitPattern: sign) }
        let v = Float(mantissa) * 0x1p-24
        return sign != 0 ? -v : v
    }
    if exponent == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

/// Decodes `count` little-endian elements of `dtype` from `src` into Floats.
func decodeToFloats(_ src: UnsafeRawBufferPointer, dtype: SafeTensorsDType, count: Int) -> [Float] {
    [Float](unsafeUninitializedCapacity: count) { out, initialized in
        switch dtype {
        case .f32:
            #if _endian(little)
            if count > 0, let base = out.baseAddress, let s = src.baseAddress {
                UnsafeMutableRawPointer(base).copyMemory(from: s, byteCount: 4 * count)
            }
            #else
            for i in 0..<count {
                out[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            }
            #endif
        case .f64:
            for i in 0..<count {
                out[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
            }
        case .f16:
            for i in 0..<count {
                out[i] = halfBitsToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        case .bf16:
            for i in 0..<count {
                let b = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                out[i] = Float(bitPattern: UInt32(b) << 16)
            }
        case .i64:
            for i in 0..<count { out[i] = Float(Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
        case .u64:
            for i in 0..<count { out[i] = Float(UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) }
        case .i32:
            for i in 0..<count { out[i] = Float(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
        case .u32:
            for i in 0..<count { out[i] = Float(UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .i16:
            for i in 0..<count { out[i] = Float(Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
        case .u16:
            for i in 0..<count { out[i] = Float(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .i8:
            for i in 0..<count { out[i] = Float(Int8(bitPattern: src[i])) }
        case .u8:
            for i in 0..<count { out[i] = Float(src[i]) }
        case .bool:
            for i in 0..<count { out[i] = src[i] != 0 ? 1 : 0 }
        default:
            // Unsupported dtypes are refused when the file is opened.
            for i in 0..<count { out[i] = .nan }
        }
        initialized = count
    }
}

// MARK: - Writing

extension SafeTensorsFile {
    /// Encodes `tensors` as a safetensors file image (all F32), tensors sorted by name, the JSON
    /// header padded with spaces to a multiple of 8 bytes so the data is 8-byte aligned.
    /// `name` is used in error messages.
    public static func encode(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String]? = nil,
                              name: String = "<memory>") throws -> Data {
        var seen = Set<String>()
        for t in tensors {
            guard t.name != "__metadata__" else {
                throw DataError(file: name, key: t.name, message: "'__metadata__' is reserved and cannot name a tensor")
            }
            guard seen.insert(t.name).inserted else {
                throw DataError(file: name, key: t.name, message: "duplicate tensor name; each name must appear once")
            }
            guard t.tensor.shape.allSatisfy({ $0 >= 0 }), checkedProduct(t.tensor.shape) == t.tensor.storage.count else {
                throw DataError(file: name, key: t.name,
                                message: "shape \(shapeString(t.tensor.shape)) does not match \(t.tensor.storage.count) stored elements")
            }
        }
        let sorted = tensors.sorted { $0.name < $1.name }
        var header = "{"
        var first = true
        if let metadata {
            header += jsonQuoted("__metadata__") + ":{"
            header += metadata.sorted { $0.key < $1.key }.map { jsonQuoted($0.key) + ":" + jsonQuoted($0.value) }
                .joined(separator: ",")
            header += "}"
            first = false
        }
        var offset = 0
        for t in sorted {
            let nbytes = t.tensor.storage.count * 4
            if !first { header += "," }
            first = false
            header += jsonQuoted(t.name) + ":{\"dtype\":\"F32\",\"shape\":["
            header += t.tensor.shape.map(String.init).joined(separator: ",")
            header += "],\"data_offsets\":[\(offset),\(offset + nbytes)]}"
            offset += nbytes
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        let pad = (8 - headerBytes.count % 8) % 8
        headerBytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: pad))

        var out = Data(capacity: 8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        for t in sorted {
            #if _endian(little)
            t.tensor.storage.withUnsafeBytes { out.append(contentsOf: $0) }
            #else
            for v in t.tensor.storage { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
            #endif
        }
        return out
    }

    /// Writes `tensors` (F32) to `url` atomically (temporary file in the same directory, then rename).
    /// Tensors are laid out sorted by name, so the output is deterministic.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String]? = nil,
                             to url: URL) throws {
        let bytes = try encode(tensors, metadata: metadata, name: url.path)
        try writeAtomically(bytes, to: url)
    }
}

/// A JSON string literal for `s` (escaping quotes, backslashes and control characters).
func jsonQuoted(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

// MARK: - Strict state-dict loading

/// How a checkpoint's keys map to the network's state-dict names. PyTorch saves the same network in several
/// layouts, each read as it is, without key edits:
/// - a plain `model.state_dict()`;
/// - `module.` before the keys (`nn.DataParallel`);
/// - the network under `model.` beside an `ImageNormalizer` under `normalize.` (`normalize.mean`,
///   `normalize.std`): `nn.Sequential(normalize=…, model=net)`, as the reference repo and RobustBench wrap their
///   ImageNet models;
/// - `mu` and `sigma` buffers beside the network's keys: RobustBench's CIFAR models that normalise inside
///   (the AugMix ResNeXt-29 and WRN-40-2).
/// The normalisation buffers are not the network's; `inputNormalization(in:)` reads them.
public struct CheckpointLayout: Sendable {
    /// The file key of each network key.
    public let fileKeys: [String: String]
    /// The file keys of the stored input normalisation's mean and std, if any.
    public let normalizationKeys: (mean: String, std: String)?

    public init(_ file: SafeTensorsFile) throws {
        // Strip `module.`, refusing collisions like "module.a" + "a".
        var stripped: [String: String] = [:]
        for e in file.entries {
            let key = e.name.hasPrefix("module.") ? String(e.name.dropFirst("module.".count)) : e.name
            if let other = stripped[key] {
                throw DataError(file: file.name, key: key,
                                message: "appears twice once the 'module.' prefix is stripped (as '\(other)' and '\(e.name)')")
            }
            stripped[key] = e.name
        }
        if let mean = stripped["normalize.mean"], let std = stripped["normalize.std"],
           stripped.keys.allSatisfy({ $0.hasPrefix("model.") || $0.hasPrefix("normalize.") }) {
            normalizationKeys = (mean, std)
            var network: [String: String] = [:]
            for (key, fileKey) in stripped where key.hasPrefix("model.") { network[String(key.dropFirst("model.".count))] = fileKey }
            // Other `normalize.*` keys stay, to be refused as unexpected.
            for (key, fileKey) in stripped where key.hasPrefix("normalize.") && key != "normalize.mean" && key != "normalize.std" {
                network[key] = fileKey
            }
            fileKeys = network
        } else if let mean = stripped["mu"], let std = stripped["sigma"] {
            normalizationKeys = (mean, std)
            stripped["mu"] = nil
            stripped["sigma"] = nil
            fileKeys = stripped
        } else {
            normalizationKeys = nil
            fileKeys = stripped
        }
    }

    /// The file key of network key `name`, nil when the file does not have it.
    public func fileKey(_ name: String) -> String? { fileKeys[name] }

    /// The input normalisation the file stores, `(x - mean) / std` per channel, nil when it stores none. Each buffer
    /// must hold `channels` finite values (shape (1, C, 1, 1), as PyTorch registers them, or (C)); each std must be
    /// positive with a finite reciprocal (`isUsableStandardDeviation`: the input is divided by it).
    public func inputNormalization(in file: SafeTensorsFile, channels: Int) throws -> (mean: [Float], std: [Float])? {
        guard let (meanKey, stdKey) = normalizationKeys else { return nil }
        func values(_ key: String, positive: Bool) throws -> [Float] {
            let e = try file.entry(key)
            guard e.shape == [1, channels, 1, 1] || e.shape == [channels] else {
                throw DataError(file: file.name, key: key,
                                message: "expected the input normalisation's shape [1, \(channels), 1, 1] (one value per input channel), found \(shapeString(e.shape))")
            }
            let v = try file.tensor(key).storage
            guard v.allSatisfy({ positive ? isUsableStandardDeviation($0) : $0.isFinite }) else {
                throw DataError(file: file.name, key: key,
                                message: positive
                                    ? "expected positive finite values with finite reciprocals for the input normalisation "
                                        + "(the input is divided by them), found \(v)"
                                    : "expected finite values for the input normalisation, found \(v)")
            }
            return v
        }
        return (try values(meanKey, positive: false), try values(stdKey, positive: true))
    }
}

/// Whether `std` can divide an input normalisation: positive, finite, and with a finite reciprocal (the input is
/// multiplied by `1 / std`, which is infinite for a std of 2^-128 or less). Shared by the load-time check
/// (`CheckpointLayout.inputNormalization`) and the model's own (`ImageClassifier.inputNormalizationProblem`).
public func isUsableStandardDeviation(_ std: Float) -> Bool {
    std > 0 && std.isFinite && (1 / std).isFinite
}

/// Loads the tensors a model expects from `file`, strictly.
///
/// The file's keys are read through its `CheckpointLayout` (a `module.` or wrapper prefix stripped, stored input
/// normalisation set aside). Every expected name must be present with exactly the expected shape, unless it is in
/// `optional` (e.g. BatchNorm's `num_batches_tracked`); every other file key must be expected. All problems are
/// reported in one error: when there is exactly one, the error's `key` names it and the message says what was
/// expected (`expected shape [160], found [16]`); otherwise the message lists missing keys, unexpected keys and
/// shape mismatches (the first few of each, then "and N more").
public func loadStateDict(from file: SafeTensorsFile, expected: [(name: String, shape: [Int])],
                          optional: Set<String> = []) throws -> [String: Tensor] {
    let fileKeys = try CheckpointLayout(file).fileKeys

    var missing: [(String, [Int])] = []
    var mismatched: [(String, [Int], [Int])] = []
    var expectedNames = Set<String>()
    var toLoad: [(String, String)] = []
    for (name, shape) in expected {
        expectedNames.insert(name)
        guard let fileName = fileKeys[name] else {
            if !optional.contains(name) { missing.append((name, shape)) }
            continue
        }
        let entry = try file.entry(fileName)
        if entry.shape == shape {
            toLoad.append((name, fileName))
        } else {
            mismatched.append((name, shape, entry.shape))
        }
    }
    // In file order; the stored normalisation is not the network's.
    let networkKey = Dictionary(uniqueKeysWithValues: fileKeys.map { ($1, $0) })
    let unexpected = file.entries.compactMap { e in networkKey[e.name].flatMap { expectedNames.contains($0) ? nil : $0 } }

    let problems = missing.count + mismatched.count + unexpected.count
    if problems == 1 {
        if let (name, shape) = missing.first {
            throw DataError(file: file.name, key: name,
                            message: "missing from the file (the model expects shape \(shapeString(shape)))")
        }
        if let (name, want, found) = mismatched.first {
            throw DataError(file: file.name, key: name,
                            message: "expected shape \(shapeString(want)), found \(shapeString(found))")
        }
        throw DataError(file: file.name, key: unexpected[0], message: "unexpected: the model has no parameter or buffer of this name")
    }
    if problems > 1 {
        func list<T>(_ items: [T], _ render: (T) -> String) -> String {
            let shown = items.prefix(5).map(render).joined(separator: ", ")
            return items.count > 5 ? shown + " and \(items.count - 5) more" : shown
        }
        var parts: [String] = []
        if !missing.isEmpty { parts.append("\(missing.count) missing: " + list(missing) { "'\($0.0)'" }) }
        if !unexpected.isEmpty { parts.append("\(unexpected.count) unexpected: " + list(unexpected) { "'\($0)'" }) }
        if !mismatched.isEmpty {
            parts.append("\(mismatched.count) with the wrong shape: " + list(mismatched) {
                "'\($0.0)' expected shape \(shapeString($0.1)), found \(shapeString($0.2))"
            })
        }
        throw DataError(file: file.name, message: "state dict does not match the model (\(problems) problems): " + parts.joined(separator: "; "))
    }
    var result: [String: Tensor] = [:]
    for (name, fileName) in toLoad { result[name] = try file.tensor(fileName) }
    return result
}

// MARK: - Strict JSON

/// A parsed JSON value. Objects keep members in order, duplicates included, so callers can refuse them.
enum JSONValue {
    case object([(String, JSONValue)])
    case array([JSONValue])
    case string(String)
    /// The literal text of the number, validated against the JSON grammar.
    case number(String)
    case bool(Bool)
    case null

    var kindName: String {
        switch self {
        case .object: "an object"
        case .array: "an array"
        case .string: "a string"
        case .number: "a number"
        case .bool: "a boolean"
        case .null: "null"
        }
    }

    /// The value when it is a JSON integer literal (no fraction, no exponent, no minus sign) that fits in Int.
    var nonNegativeInt: Int? {
        guard case .number(let text) = self else { return nil }
        var v = 0
        for c in text.utf8 {
            guard c >= 0x30 && c <= 0x39 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(c - 0x30))
            if o1 || o2 { return nil }
            v = a
        }
        return text.isEmpty ? nil : v
    }

    /// A short rendering for error messages.
    var shortDescription: String {
        switch self {
        case .object: return "an object"
        case .array(let items):
            let inner = items.prefix(4).map(\.shortDescription).joined(separator: ", ")
            return "[" + inner + (items.count > 4 ? ", …" : "") + "]"
        case .string(let s): return jsonQuoted(s.count > 40 ? String(s.prefix(40)) + "…" : s)
        case .number(let t): return t.count > 40 ? String(t.prefix(40)) + "…" : t
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        }
    }
}

struct JSONSyntaxError: Error {
    var message: String
    var offset: Int
}

/// An RFC 8259 parser over UTF-8 bytes (already validated), with a nesting limit.
struct StrictJSONParser {
    let bytes: [UInt8]
    var pos = 0
    var depth = 0
    static let maxDepth = 128

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func parseDocument() throws -> JSONValue {
        skipWhitespace()
        let v = try parseValue()
        skipWhitespace()
        if pos < bytes.count { throw error("unexpected \(describe(bytes[pos])) after the top-level value") }
        return v
    }

    private func error(_ m: String) -> JSONSyntaxError { JSONSyntaxError(message: m, offset: pos) }

    private func describe(_ b: UInt8) -> String {
        (0x21...0x7E).contains(b) ? "character '\(Character(Unicode.Scalar(b)))'" : "byte 0x\(String(b, radix: 16, uppercase: true))"
    }

    private mutating func skipWhitespace() {
        while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x0A || bytes[pos] == 0x0D || bytes[pos] == 0x09 {
            pos += 1
        }
    }

    private mutating func parseValue() throws -> JSONValue {
        guard pos < bytes.count else { throw error("unexpected end of input") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected \(describe(bytes[pos]))")
        }
    }

    private mutating func expectLiteral(_ word: String) throws {
        for c in word.utf8 {
            guard pos < bytes.count, bytes[pos] == c else { throw error("invalid literal (expected '\(word)')") }
            pos += 1
        }
    }

    private mutating func enter() throws {
        depth += 1
        if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth) levels") }
    }

    private mutating func parseObject() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        pos += 1  // {
        var members: [(String, JSONValue)] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else {
                throw error(pos < bytes.count ? "expected a string key, found \(describe(bytes[pos]))" : "unexpected end of input inside an object")
            }
            let key = try parseString()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw error("expected ':' after object key") }
            pos += 1
            skipWhitespace()
            let value = try parseValue()
            members.append((key, value))
            skipWhitespace()
            guard pos < bytes.count else { throw error("unexpected end of input inside an object") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
            throw error("expected ',' or '}' in object, found \(describe(bytes[pos]))")
        }
    }

    private mutating func parseArray() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        pos += 1  // [
        var items: [JSONValue] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try parseValue())
            skipWhitespace()
            guard pos < bytes.count else { throw error("unexpected end of input inside an array") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            throw error("expected ',' or ']' in array, found \(describe(bytes[pos]))")
        }
    }

    private mutating func parseNumber() throws -> JSONValue {
        let start = pos
        func digit() -> Bool { pos < bytes.count && bytes[pos] >= 0x30 && bytes[pos] <= 0x39 }
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        guard digit() else { throw error("invalid number") }
        if bytes[pos] == UInt8(ascii: "0") {
            pos += 1
            if digit() { throw error("invalid number (leading zero)") }
        } else {
            while digit() { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") {
            pos += 1
            guard digit() else { throw error("invalid number (no digits after '.')") }
            while digit() { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
            pos += 1
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            guard digit() else { throw error("invalid number (no digits in exponent)") }
            while digit() { pos += 1 }
        }
        return .number(String(decoding: bytes[start..<pos], as: UTF8.self))
    }

    private mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    private mutating func parseString() throws -> String {
        pos += 1  // opening quote
        var out: [UInt8] = []
        while true {
            guard pos < bytes.count else { throw error("unterminated string") }
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") { pos += 1; break }
            if c < 0x20 { throw error("unescaped control character 0x\(String(c, radix: 16, uppercase: true)) in string") }
            if c != UInt8(ascii: "\\") { out.append(c); pos += 1; continue }
            pos += 1
            guard pos < bytes.count else { throw error("unterminated escape") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalarValue = try hex4()
                if (0xD800...0xDBFF).contains(scalarValue) {
                    guard pos + 6 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                        throw error("lone surrogate in \\u escape")
                    }
                    pos += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw error("invalid surrogate pair in \\u escape") }
                    scalarValue = 0x10000 + ((scalarValue - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalarValue) {
                    throw error("lone surrogate in \\u escape")
                }
                guard let scalar = Unicode.Scalar(scalarValue) else { throw error("invalid \\u escape") }
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                pos -= 1
                throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The offset of the first byte that breaks UTF-8 well-formedness (overlongs, surrogates and values
/// above U+10FFFF included), or nil when `bytes` is valid UTF-8.
func firstInvalidUTF8Offset(_ bytes: [UInt8]) -> Int? {
    var i = 0
    let n = bytes.count
    while i < n {
        let b0 = bytes[i]
        if b0 < 0x80 { i += 1; continue }
        var need = 0
        var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: need = 1
        case 0xE0: need = 2; lo = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: need = 2
        case 0xED: need = 2; hi = 0x9F
        case 0xF0: need = 3; lo = 0x90
        case 0xF1...0xF3: need = 3
        case 0xF4: need = 3; hi = 0x8F
        default: return i
        }
        guard i + need < n else { return i }
        let b1 = bytes[i + 1]
        guard b1 >= lo && b1 <= hi else { return i }
        var k = 2
        while k <= need {
            guard bytes[i + k] & 0xC0 == 0x80 else { return i }
            k += 1
        }
        i += need + 1
    }
    return nil
}
