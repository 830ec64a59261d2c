import Foundation

/// A strict, non-executing reader for the pickles of the CIFAR-10/CIFAR-100 "python version"
/// (`data_batch_1…5`, `test_batch`, CIFAR-100 `train`/`test`).
///
/// Pickle is a program for a stack machine; loading one with Python runs arbitrary code. This reader
/// interprets only the opcodes those files use (protocols 2–5: dicts, lists, tuples, integers, strings,
/// bytes, `None`, booleans, floats, memo) and builds exactly two kinds of object from globals, by
/// value, without calling anything: a numpy array (`numpy.core.multiarray._reconstruct` or
/// `numpy._core.multiarray._reconstruct` of `numpy.ndarray`, then its state: shape, `numpy.dtype`
/// `u1`, C order, raw bytes) and, for Python 3 protocol-2 files, `_codecs.encode(text, 'latin1')`
/// (how those spell `bytes`). Any other global, opcode or shape is refused with an error naming the
/// byte offset. The official files were written by Python 2 `cPickle` (protocol 2; `str` keys and the
/// array's bytes as `BINSTRING`), which is read as such.
public enum CIFARPickle {
    /// A value the reader can build.
    public indirect enum Value: Equatable, Sendable {
        case none, bool(Bool), int(Int), float(Double), text(String), bytes([UInt8])
        case list([Value]), tuple([Value]), dict(keys: [Value], values: [Value])
        /// A numpy uint8 array: shape and C-order bytes.
        case array(shape: [Int], data: [UInt8])
        /// Intermediate objects: the `numpy.ndarray` class, a `numpy.dtype`, a global not yet applied.
        case ndarrayClass, dtype(String), global(String), emptyArray

        /// The text of a `str`, `bytes` or Python 2 string key.
        var keyText: String? {
            switch self {
            case .text(let s): return s
            case .bytes(let b): return String(decoding: b, as: UTF8.self)
            default: return nil
            }
        }
    }

    /// The parsed top-level object.
    public static func parse(_ data: Data, name: String) throws -> Value {
        var parser = Parser(bytes: [UInt8](data), name: name)
        return try parser.run()
    }

    /// The images `(N, 3072)` uint8 (row-major `3×32×32`, CHW) and labels of a CIFAR python batch:
    /// a dict with `data` (a uint8 array of shape `(N, 3072)`, or raw bytes of `N·3072`) and `labels`
    /// (CIFAR-10) or `fine_labels` (CIFAR-100), a list of N integers. Other keys are ignored.
    public static func readBatch(_ url: URL) throws -> (pixels: [UInt8], labels: [Int]) {
        // A directory, a device (/dev/zero never ends) or a FIFO is refused before reading.
        let data = try readFileContents(url, mapped: false)   // parsed from a copy of its bytes anyway
        return try batch(from: try parse(data, name: url.path), name: url.path)
    }

    static func batch(from value: Value, name: String) throws -> (pixels: [UInt8], labels: [Int]) {
        guard case .dict(let keys, let values) = value else {
            throw DataError(file: name, message: "expected a CIFAR python batch (a pickled dict), found \(kind(value))")
        }
        func item(_ key: String) -> Value? { keys.firstIndex { $0.keyText == key }.map { values[$0] } }
        let labelKey = item("fine_labels") != nil ? "fine_labels" : "labels"
        guard let labelValue = item(labelKey) else {
            throw DataError(file: name, key: "labels", keyKind: "key", message: "missing; expected 'labels' (CIFAR-10) or 'fine_labels' (CIFAR-100)")
        }
        guard case .list(let labelItems) = labelValue else {
            throw DataError(file: name, key: labelKey, keyKind: "key", message: "expected a list of integers, found \(kind(labelValue))")
        }
        let labels = try labelItems.map { v -> Int in
            guard case .int(let i) = v, i >= 0 else {
                throw DataError(file: name, key: labelKey, keyKind: "key", message: "expected non-negative integers, found \(kind(v))")
            }
            return i
        }
        guard let dataValue = item("data") else {
            throw DataError(file: name, key: "data", keyKind: "key", message: "missing; expected the images as a (N, 3072) uint8 array")
        }
        let pixels: [UInt8]
        switch dataValue {
        case .array(let shape, let bytes):
            guard shape == [labels.count, 3072] else {
                throw DataError(file: name, key: "data", keyKind: "key", message: "expected shape [\(labels.count), 3072] (one 3×32×32 image per label), found \(shapeString(shape))")
            }
            pixels = bytes
        case .bytes(let bytes):
            guard bytes.count == labels.count * 3072 else {
                throw DataError(file: name, key: "data", keyKind: "key", message: "expected \(labels.count)·3072 bytes, found \(bytes.count)")
            }
            pixels = bytes
        default:
            throw DataError(file: name, key: "data", keyKind: "key", message: "expected a uint8 array or bytes, found \(kind(dataValue))")
        }
        return (pixels, labels)
    }

    static func kind(_ v: Value) -> String {
        switch v {
        case .none: "None"
        case .bool: "a bool"
        case .int: "an integer"
        case .float: "a float"
        case .text: "a string"
        case .bytes: "bytes"
        case .list: "a list"
        case .tuple: "a tuple"
        case .dict: "a dict"
        case .array: "an array"
        case .ndarrayClass, .dtype, .global, .emptyArray: "a numpy object"
        }
    }

    /// The deepest nesting of tuples, lists and dicts a pickle may build (an empty container is one
    /// level). The CIFAR batches need only a few; a hostile file could otherwise nest a million deep
    /// in a million bytes, and freeing or walking such a value overflows the stack.
    static let maxNestingDepth = 100

    private struct Parser {
        let bytes: [UInt8]
        let name: String
        var pos = 0
        var stack: [Value] = []
        /// The nesting depth of each `stack` entry (0 for a scalar or numpy object, 1 + the deepest item
        /// for a tuple, list or dict), kept in step with `stack` by `push` and `pop`.
        var depths: [Int] = []
        var marks: [Int] = []
        var memo: [Int: (value: Value, depth: Int)] = [:]

        init(bytes: [UInt8], name: String) { (self.bytes, self.name) = (bytes, name) }

        func fail(_ message: String, at offset: Int? = nil) -> DataError {
            DataError(file: name, message: "not a CIFAR python batch pickle: \(message) (byte \(offset ?? pos))")
        }

        /// The next `n` bytes. `n` comes from the file (up to 2⁶⁴ − 1 for BINBYTES8, which reads back
        /// negative here), so it is compared with what remains, never added to `pos`.
        mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
            guard n >= 0 else {
                throw fail("a length field holds \(UInt(bitPattern: n)), more than any file holds; expected at most the \(bytes.count - pos) bytes that remain")
            }
            guard n <= bytes.count - pos else {
                throw fail("truncated: needed \(n) more bytes, but only \(bytes.count - pos) remain")
            }
            defer { pos += n }
            return bytes[pos..<(pos + n)]
        }

        mutating func uint(_ n: Int) throws -> Int {
            try take(n).reversed().reduce(0) { $0 << 8 | Int($1) }
        }

        mutating func push(_ v: Value, depth: Int = 0) {
            stack.append(v)
            depths.append(depth)
        }

        mutating func pop() throws -> (value: Value, depth: Int) {
            guard let v = stack.popLast(), let d = depths.popLast() else { throw fail("stack underflow") }
            return (v, d)
        }

        /// The top of the stack with its depth (what BINPUT and MEMOIZE store).
        var top: (value: Value, depth: Int)? {
            guard let v = stack.last, let d = depths.last else { return nil }
            return (v, d)
        }

        mutating func popMark() throws -> (values: [Value], depths: [Int]) {
            guard let m = marks.popLast(), m <= stack.count else { throw fail("no mark") }
            defer { stack.removeSubrange(m...); depths.removeSubrange(m...) }
            return (Array(stack[m...]), Array(depths[m...]))
        }

        /// The depth of a tuple, list or dict holding items of depths `itemDepths`; refused past
        /// `maxNestingDepth`.
        func containerDepth(_ itemDepths: [Int], at: Int) throws -> Int {
            let depth = (itemDepths.max() ?? 0) + 1
            guard depth <= CIFARPickle.maxNestingDepth else {
                throw fail("tuples, lists and dicts nested deeper than \(CIFARPickle.maxNestingDepth) levels are refused (CIFAR batches need only a few)", at: at)
            }
            return depth
        }

        mutating func line() throws -> String {
            guard let end = bytes[pos...].firstIndex(of: 0x0A), end - pos < 256 else { throw fail("unterminated name") }
            defer { pos = end + 1 }
            return String(decoding: bytes[pos..<end], as: UTF8.self)
        }

        mutating func text(_ n: Int) throws -> String {
            let start = pos
            guard let s = String(validating: try take(n), as: UTF8.self) else { throw fail("invalid UTF-8 string", at: start) }
            return s
        }

        mutating func run() throws -> Value {
            let limit = 1 << 40
            while pos < bytes.count {
                let at = pos
                let op = bytes[pos]
                pos += 1
                switch op {
                case 0x80: _ = try take(1)                                        // PROTO
                case 0x95: _ = try take(8)                                        // FRAME
                case 0x2E:                                                         // STOP
                    guard stack.count == 1, marks.isEmpty else { throw fail("stack not a single object at STOP", at: at) }
                    return stack[0]
                case 0x28: marks.append(stack.count)                              // MARK
                case 0x7D: push(.dict(keys: [], values: []), depth: 1)            // EMPTY_DICT
                case 0x5D: push(.list([]), depth: 1)                              // EMPTY_LIST
                case 0x29: push(.tuple([]), depth: 1)                             // EMPTY_TUPLE
                case 0x4E: push(.none)                                            // NONE
                case 0x88: push(.bool(true))                                      // NEWTRUE
                case 0x89: push(.bool(false))                                     // NEWFALSE
                case 0x4B: push(.int(try uint(1)))                                // BININT1
                case 0x4D: push(.int(try uint(2)))                                // BININT2
                case 0x4A: push(.int(Int(Int32(truncatingIfNeeded: try uint(4)))))   // BININT
                case 0x8A:                                                         // LONG1
                    let n = try uint(1)
                    guard n <= 8 else { throw fail("integer of \(n) bytes is too large", at: at) }
                    let raw = try take(n)
                    var v = 0
                    for (i, b) in raw.enumerated() { v |= Int(b) << (8 * i) }
                    if n > 0 && n < 8 && raw.last! & 0x80 != 0 { v -= 1 << (8 * n) }
                    push(.int(v))
                case 0x47:                                                         // BINFLOAT
                    push(.float(Double(bitPattern: try take(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })))
                case 0x55: push(.bytes(Array(try take(try uint(1)))))             // SHORT_BINSTRING (Python 2 str)
                case 0x54:                                                         // BINSTRING
                    let n = Int(Int32(truncatingIfNeeded: try uint(4)))
                    guard n >= 0, n < limit else { throw fail("negative string length", at: at) }
                    push(.bytes(Array(try take(n))))
                case 0x43: push(.bytes(Array(try take(try uint(1)))))             // SHORT_BINBYTES
                case 0x42: push(.bytes(Array(try take(try uint(4)))))             // BINBYTES
                case 0x8E: push(.bytes(Array(try take(try uint(8)))))             // BINBYTES8
                case 0x8C: push(.text(try text(try uint(1))))                     // SHORT_BINUNICODE
                case 0x58: push(.text(try text(try uint(4))))                     // BINUNICODE
                case 0x71: memo[try uint(1)] = top                                // BINPUT
                case 0x72: memo[try uint(4)] = top                                // LONG_BINPUT
                case 0x94: memo[memo.count] = top                                 // MEMOIZE
                case 0x68, 0x6A:                                                   // BINGET, LONG_BINGET
                    let key = try uint(op == 0x68 ? 1 : 4)
                    guard let entry = memo[key] else { throw fail("memo \(key) is not set", at: at) }
                    push(entry.value, depth: entry.depth)
                case 0x85, 0x86, 0x87:                                             // TUPLE1/2/3
                    let n = Int(op - 0x84)
                    guard stack.count >= n else { throw fail("stack underflow", at: at) }
                    let depth = try containerDepth(Array(depths.suffix(n)), at: at)
                    let items = Array(stack.suffix(n))
                    stack.removeLast(n)
                    depths.removeLast(n)
                    push(.tuple(items), depth: depth)
                case 0x74:                                                         // TUPLE
                    let (items, itemDepths) = try popMark()
                    push(.tuple(items), depth: try containerDepth(itemDepths, at: at))
                case 0x61:                                                         // APPEND
                    let v = try pop()
                    try appendToList([v.value], depths: [v.depth], at: at)
                case 0x65:                                                         // APPENDS
                    let (items, itemDepths) = try popMark()
                    try appendToList(items, depths: itemDepths, at: at)
                case 0x73:                                                         // SETITEM
                    let v = try pop(), k = try pop()
                    try setItems([k.value, v.value], depths: [k.depth, v.depth], at: at)
                case 0x75:                                                         // SETITEMS
                    let (items, itemDepths) = try popMark()
                    try setItems(items, depths: itemDepths, at: at)
                case 0x63:                                                         // GLOBAL
                    let module = try line(), attr = try line()
                    push(try global(module, attr, at: at))
                case 0x93:                                                         // STACK_GLOBAL
                    let attr = try pop().value, module = try pop().value
                    guard case .text(let a) = attr, case .text(let m) = module else { throw fail("STACK_GLOBAL needs two strings", at: at) }
                    push(try global(m, a, at: at))
                case 0x52:                                                         // REDUCE
                    let args = try pop().value, callable = try pop().value
                    push(try reduce(callable, args, at: at))                      // a numpy object or bytes
                case 0x62:                                                         // BUILD
                    let state = try pop().value, object = try pop().value
                    push(try build(object, state, at: at))                        // a dtype or an array
                default:
                    throw fail(String(format: "opcode 0x%02X is not used by CIFAR batches and is refused", op), at: at)
                }
                // Memo sharing keeps containers by value here; the CIFAR files memoise only leaves and
                // finished objects, so this is exact for them.
            }
            throw fail("no STOP opcode")
        }

        mutating func appendToList(_ items: [Value], depths itemDepths: [Int], at: Int) throws {
            let listDepth = depths.last ?? 0
            guard case .list(var l) = try pop().value else { throw fail("APPEND to something that is not a list", at: at) }
            let depth = try max(listDepth, containerDepth(itemDepths, at: at))
            l += items
            push(.list(l), depth: depth)
        }

        mutating func setItems(_ kv: [Value], depths itemDepths: [Int], at: Int) throws {
            let dictDepth = depths.last ?? 0
            guard kv.count % 2 == 0, case .dict(var keys, var values) = try pop().value else { throw fail("SETITEM(S) on something that is not a dict", at: at) }
            let depth = try max(dictDepth, containerDepth(itemDepths, at: at))
            for i in stride(from: 0, to: kv.count, by: 2) {
                guard kv[i].keyText != nil else { throw fail("dict key is not a string", at: at) }
                keys.append(kv[i]); values.append(kv[i + 1])
            }
            push(.dict(keys: keys, values: values), depth: depth)
        }

        func global(_ module: String, _ attr: String, at: Int) throws -> Value {
            switch (module, attr) {
            case ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"): return .global("_reconstruct")
            case ("numpy", "ndarray"): return .ndarrayClass
            case ("numpy", "dtype"): return .global("dtype")
            case ("_codecs", "encode"): return .global("encode")
            default: throw fail("global \(module).\(attr) is not allowed (only numpy arrays of uint8 are read)", at: at)
            }
        }

        func reduce(_ callable: Value, _ args: Value, at: Int) throws -> Value {
            guard case .tuple(let a) = args else { throw fail("REDUCE arguments are not a tuple", at: at) }
            switch callable {
            case .global("_reconstruct"):
                guard a.count == 3, a[0] == .ndarrayClass else { throw fail("unexpected numpy _reconstruct arguments", at: at) }
                return .emptyArray
            case .global("dtype"):
                guard a.count == 3, let t = a[0].keyText else { throw fail("unexpected numpy dtype arguments", at: at) }
                guard t == "u1" || t == "|u1" else {
                    throw fail("numpy dtype '\(t)' is refused: CIFAR images are uint8 ('u1')", at: at)
                }
                return .dtype("u1")
            case .global("encode"):
                guard a.count == 2, case .text(let s) = a[0], a[1] == .text("latin1") else {
                    throw fail("unexpected _codecs.encode arguments (expected text and 'latin1')", at: at)
                }
                var out: [UInt8] = []
                for u in s.unicodeScalars {
                    guard u.value < 256 else { throw fail("latin1 text holds a character above U+00FF", at: at) }
                    out.append(UInt8(u.value))
                }
                return .bytes(out)
            default: throw fail("REDUCE of \(kind(callable)) is refused", at: at)
            }
        }

        func build(_ object: Value, _ state: Value, at: Int) throws -> Value {
            guard case .tuple(let s) = state else { throw fail("BUILD state is not a tuple", at: at) }
            switch object {
            case .dtype:
                // (version, byte order, subarray, names, fields, elsize, alignment, flags): '|' for uint8.
                guard s.count >= 2, let order = s[1].keyText, order == "|" || order == "<" || order == "=" else {
                    throw fail("unexpected numpy dtype state", at: at)
                }
                return object
            case .emptyArray:
                // (version, shape, dtype, is_fortran, raw data)
                guard s.count == 5, case .tuple(let dims) = s[1], case .dtype = s[2] else { throw fail("unexpected numpy array state", at: at) }
                guard s[3] == .bool(false) || s[3] == .int(0) else { throw fail("Fortran-order arrays are refused", at: at) }
                let shape = try dims.map { d -> Int in
                    guard case .int(let n) = d, n >= 0 else { throw fail("array shape is not non-negative integers", at: at) }
                    return n
                }
                guard case .bytes(let raw) = s[4] else { throw fail("array data is not bytes", at: at) }
                guard let count = checkedProduct(shape), count == raw.count else {
                    throw fail("array of shape \(shapeString(shape)) holds \(raw.count) bytes", at: at)
                }
                return .array(shape: shape, data: raw)
            default: throw fail("BUILD of \(kind(object)) is refused", at: at)
            }
        }
    }
}
