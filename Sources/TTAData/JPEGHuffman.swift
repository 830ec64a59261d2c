/// A validated JPEG Huffman table (ITU-T T.81 Annex C): canonical codes rebuilt from the 16 code-length
/// counts of a DHT segment, with a 9-bit lookup for the common short codes.
struct JPEGHuffmanTable {
    /// Symbols in code order.
    let values: [UInt8]
    /// For code length `l` (1...16): the largest code of that length, or -1 when there is none.
    let maxCode: [Int32]
    /// For code length `l`: the first code of that length and the index of its symbol in `values`.
    let minCode: [Int32]
    let valueIndex: [Int32]
    /// Indexed by the next `lookupBits` bits: `length << 8 | symbol`, or 0 when the code is longer.
    let lookup: [UInt16]

    static let lookupBits = 9

    /// Builds the table, or returns a description of what is wrong with the counts.
    init(counts: [Int], values: [UInt8]) throws(JPEGTableError) {
        precondition(counts.count == 16)
        let total = counts.reduce(0, +)
        guard total <= 256 else { throw JPEGTableError("table has \(total) codes, more than the 256 an 8-bit symbol allows") }
        guard total == values.count else { throw JPEGTableError("table declares \(total) codes but has \(values.count) symbols") }
        var maxCode = [Int32](repeating: -1, count: 17)
        var minCode = [Int32](repeating: 0, count: 17)
        var valueIndex = [Int32](repeating: 0, count: 17)
        var lookup = [UInt16](repeating: 0, count: 1 << Self.lookupBits)
        var code = 0, k = 0
        for length in 1...16 {
            let n = counts[length - 1]
            valueIndex[length] = Int32(k)
            minCode[length] = Int32(code)
            if n > 0 { maxCode[length] = Int32(code + n - 1) }
            if length <= Self.lookupBits {
                let shift = Self.lookupBits - length
                for i in 0..<n {
                    let c = code + i
                    guard c < 1 << length else { break }  // reported just below
                    let entry = UInt16(length) << 8 | UInt16(values[k + i])
                    for j in (c << shift)..<((c + 1) << shift) { lookup[j] = entry }
                }
            }
            code += n
            k += n
            // Every code of this length must fit in `length` bits (the Kraft inequality).
            guard code <= 1 << length else {
                throw JPEGTableError("code lengths are inconsistent: \(code) codes no longer than \(length) bit\(length == 1 ? "" : "s") cannot all be distinct")
            }
            code <<= 1
        }
        self.values = values
        self.maxCode = maxCode
        self.minCode = minCode
        self.valueIndex = valueIndex
        self.lookup = lookup
    }
}

struct JPEGTableError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// Reads the entropy-coded bits of a scan: removes the stuffed zero after each 0xFF data byte and stops
/// at the next marker. Past a marker (or the end of the file) it supplies zero bits but counts them,
/// so the decoder can tell that a block needed more data than the scan holds (`overran`).
struct JPEGBitReader {
    let bytes: [UInt8]
    /// The next unread byte; it points at the marker's 0xFF once `atMarker` is set.
    private(set) var position: Int
    private var buffer: UInt64 = 0
    private var count = 0
    /// How many of the `count` buffered bits at the low end are invented zeros.
    private var fakeBits = 0
    private(set) var atMarker = false

    init(bytes: [UInt8], position: Int) {
        self.bytes = bytes
        self.position = position
    }

    /// True once the decoder has consumed bits that were not in the file.
    var overran: Bool { count < fakeBits }

    @inline(__always)
    private mutating func fill() {
        while count <= 56 {
            var byte: UInt8 = 0
            if !atMarker, position < bytes.count {
                let b = bytes[position]
                if b != 0xFF {
                    byte = b
                    position += 1
                } else if position + 1 < bytes.count, bytes[position + 1] == 0x00 {
                    byte = 0xFF
                    position += 2
                } else {
                    atMarker = true
                    fakeBits += 8
                }
            } else {
                atMarker = true
                fakeBits += 8
            }
            buffer = buffer << 8 | UInt64(byte)
            count += 8
        }
    }

    /// The next `n` bits (1...16), most significant first.
    @inline(__always)
    mutating func bits(_ n: Int) -> Int {
        if count < n { fill() }
        count -= n
        return Int(truncatingIfNeeded: (buffer >> UInt64(count)) & ((1 << UInt64(n)) - 1))
    }

    @inline(__always)
    private mutating func peek(_ n: Int) -> Int {
        if count < n { fill() }
        return Int(truncatingIfNeeded: (buffer >> UInt64(count - n)) & ((1 << UInt64(n)) - 1))
    }

    /// The next Huffman-coded symbol, or nil when the bits match no code of `table`.
    @inline(__always)
    mutating func symbol(_ table: JPEGHuffmanTable) -> UInt8? {
        if count < 16 { fill() }
        let entry = table.lookup[peek(JPEGHuffmanTable.lookupBits)]
        if entry != 0 {
            count -= Int(entry >> 8)
            return UInt8(truncatingIfNeeded: entry)
        }
        for length in (JPEGHuffmanTable.lookupBits + 1)...16 {
            let code = Int32(peek(length))
            if code <= table.maxCode[length] {
                count -= length
                return table.values[Int(table.valueIndex[length] + code - table.minCode[length])]
            }
        }
        return nil
    }

    /// A magnitude category `s` followed by `s` bits, as a signed value (T.81 F.2.2.1 EXTEND).
    @inline(__always)
    mutating func receiveExtend(_ s: Int) -> Int {
        if s == 0 { return 0 }
        let v = bits(s)
        return v < 1 << (s - 1) ? v - (1 << s) + 1 : v
    }

    /// Drops the buffered bits (the padding before a marker) and moves to the next marker, skipping any
    /// stray data. Returns the marker code and its offset, or nil at the end of the file.
    mutating func nextMarker() -> (code: UInt8, offset: Int)? {
        buffer = 0
        count = 0
        fakeBits = 0
        atMarker = false
        while position + 1 < bytes.count {
            if bytes[position] == 0xFF {
                let m = bytes[position + 1]
                if m == 0x00 { position += 2; continue }
                if m == 0xFF { position += 1; continue }
                return (m, position)
            }
            position += 1
        }
        position = bytes.count
        return nil
    }

    /// Steps over the two bytes of the marker found by `nextMarker()`.
    mutating func skipMarker() { position += 2 }
}
