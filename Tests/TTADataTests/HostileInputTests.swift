import Foundation
import Testing
@testable import TTAData

// Hostile inputs that once trapped (integer overflow, stack overflow) or would have: each is refused
// with a DataError naming the file and what was expected. The pickles are written byte by byte here.

@Suite struct HostileInputTests {
    static let name = "hostile.pkl"

    static let none: UInt8 = 0x4E  // NONE

    /// `body` between a PROTO 2 header and STOP.
    static func pickle(_ body: [UInt8]) -> [UInt8] { [0x80, 0x02] + body + [0x2E] }

    /// `bytes` repeated `count` times.
    static func repeated(_ bytes: [UInt8], _ count: Int) -> [UInt8] {
        Array([[UInt8]](repeating: bytes, count: count).joined())
    }

    /// The parts joined (kept out of long `+` chains of literals, which type-check slowly).
    static func cat(_ parts: [UInt8]...) -> [UInt8] { parts.flatMap { $0 } }

    static func parse(_ bytes: [UInt8]) throws -> CIFARPickle.Value {
        try CIFARPickle.parse(Data(bytes), name: name)
    }

    // MARK: CIFAR pickle: lengths

    /// Every length-taking opcode with a length past the end: BINBYTES8 lengths near 2⁶³ once overflowed
    /// `pos + n`; lengths of 2⁶³ and more read back negative.
    @Test func lengthsPastTheEndAreRefusedWithoutOverflow() {
        let cases: [(bytes: [UInt8], message: String)] = [
            // BINBYTES8 of Int64.max (the audit's crash).
            ([0x80, 0x02, 0x8E, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
             "truncated: needed 9223372036854775807 more bytes, but only 0 remain (byte 11)"),
            // BINBYTES8 of Int64.max - 10 with 3 bytes left.
            ([0x80, 0x02, 0x8E, 0xF5, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x2E, 0x2E, 0x2E],
             "truncated: needed 9223372036854775797 more bytes, but only 3 remain"),
            // BINBYTES8 of 2^63 and of 2^64 - 1.
            ([0x80, 0x02, 0x8E, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80],
             "a length field holds 9223372036854775808, more than any file holds; expected at most the 0 bytes that remain"),
            ([0x80, 0x02, 0x8E, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x2E],
             "a length field holds 18446744073709551615, more than any file holds; expected at most the 1 bytes that remain"),
            // BINBYTES8 whose length field itself is cut short.
            ([0x80, 0x02, 0x8E, 0x01, 0x02, 0x03], "truncated: needed 8 more bytes, but only 3 remain"),
            // BINBYTES, BINUNICODE, BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE, SHORT_BINSTRING.
            ([0x80, 0x02, 0x42, 0xFF, 0xFF, 0xFF, 0xFF], "truncated: needed 4294967295 more bytes, but only 0 remain"),
            ([0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0xFF, 0x2E], "truncated: needed 4294967295 more bytes, but only 1 remain"),
            ([0x80, 0x02, 0x54, 0xFF, 0xFF, 0xFF, 0x7F], "truncated: needed 2147483647 more bytes, but only 0 remain"),
            ([0x80, 0x02, 0x54, 0xFF, 0xFF, 0xFF, 0xFF], "negative string length"),
            ([0x80, 0x02, 0x43, 0xFF, 0x2E], "truncated: needed 255 more bytes, but only 1 remain"),
            ([0x80, 0x02, 0x8C, 0xFF], "truncated: needed 255 more bytes, but only 0 remain"),
            ([0x80, 0x02, 0x55, 0xFF], "truncated: needed 255 more bytes, but only 0 remain"),
            // FRAME, LONG1, BINFLOAT, LONG_BINPUT cut short.
            ([0x80, 0x02, 0x95, 0x01, 0x02, 0x03], "truncated: needed 8 more bytes, but only 3 remain"),
            ([0x80, 0x02, 0x8A, 0x08, 0x01, 0x02], "truncated: needed 8 more bytes, but only 2 remain"),
            ([0x80, 0x02, 0x47, 0x01], "truncated: needed 8 more bytes, but only 1 remain"),
            ([0x80, 0x02, Self.none, 0x72, 0x01], "truncated: needed 4 more bytes, but only 1 remain"),
        ]
        for c in cases {
            expectDataError(file: Self.name, key: nil, contains: ["not a CIFAR python batch pickle: ", c.message]) {
                _ = try Self.parse(c.bytes)
            }
        }
    }

    /// The same through `readBatch`: the error names the file on disk.
    @Test func hostileBatchFileIsNamed() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("hostile-batch-\(UUID().uuidString)")
        try Data([0x80, 0x02, 0x8E, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        expectDataError(file: url.path, key: nil, contains: ["truncated: needed 9223372036854775807 more bytes"]) {
            _ = try CIFARPickle.readBatch(url)
        }
    }

    // MARK: CIFAR pickle: nesting

    /// `N` and 200,000 TUPLE1: once built a value 200,000 deep whose release overflowed the stack.
    @Test func deeplyNestedTuplesAreRefused() {
        let bytes = Self.pickle([Self.none] + [UInt8](repeating: 0x85, count: 200_000))
        // The 101st TUPLE1 is at byte 2 + 101.
        expectDataError(file: Self.name, key: nil, contains: ["nested deeper than 100 levels", "(byte 103)"]) {
            _ = try Self.parse(bytes)
        }
        let lists = Self.pickle([UInt8](repeating: 0x5D, count: 50_000) + [Self.none] + [UInt8](repeating: 0x61, count: 50_000))
        expectDataError(file: Self.name, key: nil, contains: ["nested deeper than 100 levels"]) {
            _ = try Self.parse(lists)
        }
    }

    /// Every nesting opcode counts: 100 levels are read, 101 refused.
    @Test func everyNestingOpcodeCountsTowardTheLimit() {
        let none = Self.none, key: [UInt8] = [0x8C, 0x01, 0x6B]  // SHORT_BINUNICODE "k"
        let builders: [(name: String, body: (Int) -> [UInt8])] = [
            ("TUPLE1", { Self.cat([none], Self.repeated([0x85], $0)) }),
            ("TUPLE2", { Self.cat([none], Self.repeated([none, 0x86], $0)) }),
            ("TUPLE3", { Self.cat([none], Self.repeated([none, none, 0x87], $0)) }),
            ("MARK/TUPLE", { Self.cat(Self.repeated([0x28], $0), [none], Self.repeated([0x74], $0)) }),
            ("EMPTY_TUPLE/TUPLE1", { Self.cat([0x29], Self.repeated([0x85], $0 - 1)) }),
            ("EMPTY_LIST/APPEND", { Self.cat(Self.repeated([0x5D], $0), [none], Self.repeated([0x61], $0)) }),
            ("EMPTY_LIST/MARK/APPENDS", { Self.cat(Self.repeated([0x5D, 0x28], $0), [none], Self.repeated([0x65], $0)) }),
            ("EMPTY_DICT/SETITEM", { Self.cat(Self.repeated(Self.cat([0x7D], key), $0), [none], Self.repeated([0x73], $0)) }),
            ("EMPTY_DICT/MARK/SETITEMS", { Self.cat(Self.repeated(Self.cat([0x7D, 0x28], key), $0), [none], Self.repeated([0x75], $0)) }),
            // A 50-deep tuple memoised (MEMOIZE) and appended to a list, then fetched (BINGET 0), wrapped
            // further and appended: the fetched copy keeps its depth.
            ("MEMOIZE/BINGET", { Self.cat([0x5D, none], Self.repeated([0x85], 50), [0x94, 0x61, 0x68, 0x00],
                                          Self.repeated([0x85], $0 - 51), [0x61]) }),
        ]
        let limit = CIFARPickle.maxNestingDepth
        #expect(limit == 100)
        for b in builders {
            do {
                _ = try Self.parse(Self.pickle(b.body(limit)))
            } catch {
                Issue.record("\(b.name): \(limit) levels were refused: \(error)")
            }
            expectDataError(file: Self.name, key: nil, contains: ["nested deeper than 100 levels are refused"]) {
                _ = try Self.parse(Self.pickle(b.body(limit + 1)))
            }
        }
    }

    /// 100 nested tuples are read whole.
    @Test func nestingAtTheLimitIsReadExactly() throws {
        var value = try Self.parse(Self.pickle([Self.none] + [UInt8](repeating: 0x85, count: 100)))
        var levels = 0
        while case .tuple(let items) = value, items.count == 1 {
            value = items[0]
            levels += 1
        }
        #expect(levels == 100)
        #expect(value == CIFARPickle.Value.none)
    }

    // MARK: CorruptionBenchmark labels

    /// A label of Int64.max once overflowed `labels.max() + 1` when numClasses was not given.
    @Test func hugeLabelsAreRefused() throws {
        let f = try CBFixture.make(["fog"], k: 2, classes: 4)
        let labelsPath = f.path("labels.npy")
        func write(row3 label: Int64) throws {
            var labels = [Int64](repeating: 1, count: 10)
            labels[3] = label
            try NPYFile.write(int64: labels, shape: [10], to: f.url("labels.npy"))
        }
        try write(row3: Int64.max)
        expectBenchmarkError(file: labelsPath, contains: ["labels.npy", "label 9223372036854775807 at row 3 is out of range",
                                                          "non-negative class indices below 100000"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        expectBenchmarkError(file: labelsPath, contains: ["label 9223372036854775807 at row 3 is out of range", "0..<10"]) {
            _ = try CorruptionBenchmark(directory: f.folder, numClasses: 10)
        }
        try write(row3: 100_000)
        expectBenchmarkError(file: labelsPath, contains: ["label 100000 at row 3 is out of range"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        try write(row3: Int64.min)
        expectBenchmarkError(file: labelsPath, contains: ["label -9223372036854775808 at row 3 is out of range", "non-negative"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        // The largest accepted label.
        try write(row3: 99_999)
        #expect(try CorruptionBenchmark(directory: f.folder).numClasses == 100_000)
    }

    @Test func hugeNumClassesIsRefused() throws {
        let f = try CBFixture.make(["fog"], k: 2, classes: 4)
        expectBenchmarkError(file: f.path("labels.npy"), contains: ["numClasses must be at most 100000, got 9223372036854775807"]) {
            _ = try CorruptionBenchmark(directory: f.folder, numClasses: Int.max)
        }
        #expect(try CorruptionBenchmark(directory: f.folder, numClasses: 100_000).numClasses == 100_000)
    }
}
