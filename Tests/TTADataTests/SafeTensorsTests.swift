import Foundation
import Testing
import TTATensor
@testable import TTAData

// Fixtures in Tests/Fixtures/formats/ are written by scripts/make_format_fixtures.py (see NPYTests.swift
// for the FormatFixtures helper); each test names the script function that wrote its files.

/// A safetensors image: 8-byte little-endian length (or `length` when given), header bytes, payload.
func stBytes(_ header: [UInt8], payload: [UInt8] = [], length: UInt64? = nil) -> Data {
    var out = Data()
    withUnsafeBytes(of: (length ?? UInt64(header.count)).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: header)
    out.append(contentsOf: payload)
    return out
}

func stBytes(_ header: String, payload: [UInt8] = [], length: UInt64? = nil) -> Data {
    stBytes(Array(header.utf8), payload: payload, length: length)
}

@Suite("SafeTensors")
struct SafeTensorsTests {
    let name = "bad.safetensors"

    // MARK: Files written by the safetensors package

    /// make_st_torch: every dtype the reader converts, bit-exact against torch's float32 conversion.
    @Test func readsTorchFileWithAllDtypes() throws {
        let fname = "st_torch_dtypes.safetensors"
        let file = try SafeTensorsFile.read(FormatFixtures.url(fname))
        #expect(file.metadata == ["format": "pt"])
        let expected = (FormatFixtures.record(fname)["tensors"] as? [String: Any]) ?? [:]
        #expect(Set(file.names) == Set(expected.keys))
        #expect(file.names.count == 13)
        let dtypes = Dictionary(uniqueKeysWithValues: file.entries.map { ($0.name, $0.dtype) })
        #expect(dtypes["bf16"] == "BF16" && dtypes["f16"] == "F16" && dtypes["bool"] == "BOOL" && dtypes["i64"] == "I64")
        for tensorName in expected.keys.sorted() {
            let rec = FormatFixtures.record(fname, tensor: tensorName)
            let t = try file.tensor(tensorName)
            #expect(t.shape == FormatFixtures.shape(rec), "\(tensorName)")
            #expect(t.storage.map(\.bitPattern) == FormatFixtures.bits(rec), "\(tensorName)")
            if rec["ints"] != nil {
                #expect(try file.int64Values(tensorName) == FormatFixtures.ints(rec).map(Int64.init), "\(tensorName)")
            }
        }
        // Specific values worth seeing spelled out.
        #expect(try file.int64Values("bn.num_batches_tracked") == [12345])
        #expect(try file.int64Values("i64") == [-3, 0, 7, 9_007_199_254_740_993])
        let f16 = try file.tensor("f16").storage
        #expect(f16[0] == 0.5 && f16[1].sign == .minus && f16[2] == 65504 && f16[3] == 0x1p-24 && f16[4] == .infinity && f16[5].isNaN)
        #expect(try file.tensor("bf16").storage[0...1] == [1.5, -2.25])
        #expect(try file.tensor("bool").storage == [1, 0, 1])
        #expect(try file.tensor("scalar") == Tensor(shape: [], storage: [4]))
        #expect(try file.tensor("empty") == Tensor(shape: [0, 3], storage: []))
    }

    /// make_st_torch: entries are sorted by data offset and tile the buffer.
    @Test func entriesAreSortedByOffset() throws {
        let file = try SafeTensorsFile.read(FormatFixtures.url("st_torch_dtypes.safetensors"))
        var end = 0
        for e in file.entries {
            #expect(e.byteRange.lowerBound == end)
            end = e.byteRange.upperBound
        }
        #expect(file.dataStart + end == (try FormatFixtures.data("st_torch_dtypes.safetensors")).count)
        #expect(file.entries.first?.name == "bn.num_batches_tracked")
        // "empty" (0 bytes) and "f32" share offset 64: the empty one comes first.
        let names = file.names
        #expect((names.firstIndex(of: "empty") ?? 99) < (names.firstIndex(of: "f32") ?? 0))
    }

    /// make_st_numpy: F32 and F16 written by safetensors.numpy.
    @Test func readsNumpyWrittenFiles() throws {
        for (fname, metadata) in [("st_numpy_f32.safetensors", ["format": "pt"]), ("st_numpy_f16.safetensors", [:])] {
            let file = try SafeTensorsFile.read(FormatFixtures.url(fname))
            #expect(file.metadata == metadata)
            for tensorName in file.names {
                let rec = FormatFixtures.record(fname, tensor: tensorName)
                let t = try file.tensor(tensorName)
                #expect(t.shape == FormatFixtures.shape(rec))
                #expect(t.storage.map(\.bitPattern) == FormatFixtures.bits(rec), "\(fname) \(tensorName)")
            }
        }
    }

    /// make_st_numpy: our writer produces the same bytes as safetensors.numpy.save_file.
    @Test func writerMatchesSafetensorsPackageBytes() throws {
        let fname = "st_numpy_f32.safetensors"
        let file = try SafeTensorsFile.read(FormatFixtures.url(fname))
        let tensors = try ["fc.weight", "fc.bias"].map { (name: $0, tensor: try file.tensor($0)) }  // unsorted on purpose
        #expect(try SafeTensorsFile.encode(tensors, metadata: ["format": "pt"]) == FormatFixtures.data(fname))
    }

    // MARK: Writing

    @Test func roundTripsThroughFiles() throws {
        let dir = try TempDir()
        let url = dir.file("model.safetensors")
        let tensors: [(name: String, tensor: Tensor)] = [
            ("z.weight", Tensor(shape: [2, 2], storage: [1, -2, .nan, .infinity])),
            ("a.bias", Tensor(shape: [3], storage: [0.25, -0.0, 3e38])),
            ("scalar", Tensor(shape: [], storage: [42])),
            ("empty", Tensor(shape: [0, 4], storage: [])),
            ("naïve \"quoted\"\n\\name", Tensor(shape: [1], storage: [9])),
        ]
        try SafeTensorsFile.write(tensors, metadata: ["format": "pt", "note": "a \"b\" \u{1}"], to: url)
        let back = try SafeTensorsFile.read(url)
        #expect(back.metadata == ["format": "pt", "note": "a \"b\" \u{1}"])
        #expect(back.headerLength % 8 == 0)
        #expect(Set(back.names) == Set(tensors.map(\.name)))
        for (n, t) in tensors {
            let r = try back.tensor(n)
            #expect(r.shape == t.shape && r.storage.map(\.bitPattern) == t.storage.map(\.bitPattern), "\(n)")
        }
        // Laid out sorted by name: deterministic regardless of input order.
        #expect(try SafeTensorsFile.encode(tensors.reversed(), metadata: nil) == SafeTensorsFile.encode(tensors, metadata: nil))
        // No temporary files are left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path) == ["model.safetensors"])
        // An empty file with no tensors is valid.
        try SafeTensorsFile.write([], to: url)
        #expect(try SafeTensorsFile.read(url).entries.isEmpty)
    }

    @Test func writeRefusesBadInput() {
        let t = Tensor(shape: [1], storage: [1])
        expectDataError(file: "<memory>", key: "w", contains: ["duplicate tensor name"]) {
            _ = try SafeTensorsFile.encode([("w", t), ("w", t)])
        }
        expectDataError(file: "<memory>", key: "__metadata__", contains: ["reserved"]) {
            _ = try SafeTensorsFile.encode([("__metadata__", t)])
        }
        var broken = t
        broken.storage.append(2)  // storage no longer matches the shape
        expectDataError(file: "<memory>", key: "w", contains: ["shape [1] does not match 2 stored elements"]) {
            _ = try SafeTensorsFile.encode([("w", broken)])
        }
    }

    // MARK: Accessors

    @Test func accessorErrorsNameTheTensor() throws {
        let file = try SafeTensorsFile.read(FormatFixtures.url("st_numpy_f32.safetensors"))
        let path = FormatFixtures.url("st_numpy_f32.safetensors").path
        expectDataError(file: path, key: "fc.nope", contains: ["no such tensor in the file (it has 2 tensors: 'fc.bias', 'fc.weight')"]) {
            _ = try file.tensor("fc.nope")
        }
        expectDataError(file: path, key: "fc.bias", contains: ["expected an integer or BOOL dtype, found F32"]) {
            _ = try file.int64Values("fc.bias")
        }
        #expect(file.contains("fc.bias") && !file.contains("fc"))
        #expect(try file.rawBytes("fc.bias") == Data([0, 0, 0, 0x3F, 0, 0, 0x80, 0xBF]))
    }

    @Test func missingFileNamesThePath() {
        let url = URL(fileURLWithPath: "/nonexistent/model.safetensors")
        expectDataError(file: url.path, key: nil, contains: ["cannot read file"]) { _ = try SafeTensorsFile.read(url) }
    }

    @Test func u64BeyondInt64IsRefused() throws {
        let f = try SafeTensorsFile(data: stBytes(#"{"u":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}}"#,
                                                  payload: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), name: name)
        expectDataError(file: name, key: "u", contains: ["U64 value 18446744073709551615 does not fit in Int64"]) {
            _ = try f.int64Values("u")
        }
        #expect(try f.tensor("u").storage == [Float(UInt64.max)])
    }

    // MARK: Hostile files: framing

    @Test func refusesBadFraming() {
        expectDataError(file: name, key: nil, contains: ["file is 0 bytes, shorter than the 8-byte header-length prefix"]) {
            _ = try SafeTensorsFile(data: Data(), name: name)
        }
        expectDataError(file: name, key: nil, contains: ["file is 7 bytes"]) {
            _ = try SafeTensorsFile(data: Data([2, 0, 0, 0, 0, 0, 0]), name: name)
        }
        expectDataError(file: name, key: nil, contains: ["header length 100000001 exceeds the limit of 100000000 bytes"]) {
            _ = try SafeTensorsFile(data: stBytes("{}", length: 100_000_001), name: name)
        }
        expectDataError(file: name, key: nil, contains: ["header length 18446744073709551615 exceeds the limit"]) {
            _ = try SafeTensorsFile(data: stBytes("{}", length: UInt64.max), name: name)
        }
        expectDataError(file: name, key: nil, contains: ["header length 3 runs past the end of the file: the header would end at byte 11 but the file is 10 bytes"]) {
            _ = try SafeTensorsFile(data: stBytes("{}", length: 3), name: name)
        }
        expectDataError(file: name, key: nil, contains: ["not a safetensors file (header length 0;"]) {
            _ = try SafeTensorsFile(data: stBytes(""), name: name)
        }
        // A header that is exactly the limit but missing from the file.
        expectDataError(file: name, key: nil, contains: ["runs past the end of the file"]) {
            _ = try SafeTensorsFile(data: stBytes("{}", length: 100_000_000), name: name)
        }
    }

    @Test func refusesBadHeaderText() {
        expectDataError(file: name, key: nil, contains: ["header is not valid UTF-8 (invalid byte at offset 2 of the header)"]) {
            _ = try SafeTensorsFile(data: stBytes([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D]), name: name)
        }
        for bad: [UInt8] in [[0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82]] {  // overlong, surrogate, > U+10FFFF, truncated
            expectDataError(file: name, key: nil, contains: ["not valid UTF-8"]) {
                _ = try SafeTensorsFile(data: stBytes([0x7B, 0x22] + bad + [0x22, 0x3A, 0x31, 0x7D]), name: name)
            }
        }
        expectDataError(file: name, key: nil, contains: ["not a safetensors file (the header starts with byte 0x20; a safetensors header is a JSON object, starting with '{' (byte 0x7B))"]) {
            _ = try SafeTensorsFile(data: stBytes(" {}"), name: name)
        }
        expectDataError(file: name, key: nil, contains: ["not a safetensors file", "the header starts with byte 0x5B"]) {
            _ = try SafeTensorsFile(data: stBytes("[]"), name: name)
        }
        let syntax: [(String, String)] = [
            (#"{"a":}"#, "unexpected character '}' at byte 5"),
            (#"{"a":1,}"#, "expected a string key, found character '}'"),
            (#"{"a" 1}"#, "expected ':' after object key"),
            (#"{} x"#, "unexpected character 'x' after the top-level value"),
            (#"{}{}"#, "after the top-level value"),
            (#"{'a':1}"#, "expected a string key, found character '''"),
            (#"{"a":tru}"#, "invalid literal (expected 'true')"),
            (#"{"a":01}"#, "leading zero"),
            (#"{"a":1.}"#, "no digits after '.'"),
            (#"{"a":"\x"}"#, "invalid escape '\\x'"),
            (#"{"a":"\ud800"}"#, "lone surrogate"),
            ("{\"a\":\"tab\there\"}", "unescaped control character 0x9"),
            (#"{"a":"unterminated}"#, "unterminated string"),
            (#"{"a":[1,2}"#, "expected ',' or ']' in array"),
            (#"{"a":NaN}"#, "unexpected character 'N'"),
            ("{\"a\":1}\u{0}", "unexpected byte 0x0 after the top-level value"),
        ]
        for (header, message) in syntax {
            expectDataError(file: name, key: nil, contains: ["header is not valid JSON: ", message, "of the header"]) {
                _ = try SafeTensorsFile(data: stBytes(header), name: name)
            }
        }
        // Deep nesting is refused without overflowing the stack.
        let deep = "{\"a\":" + String(repeating: "[", count: 200_000) + "}"
        expectDataError(file: name, key: nil, contains: ["nesting deeper than 128 levels"]) {
            _ = try SafeTensorsFile(data: stBytes(deep), name: name)
        }
    }

    // MARK: Hostile files: entries

    @Test func refusesMalformedEntries() {
        let cases: [(header: String, key: String?, message: String)] = [
            (#"{"w":5}"#, "w", "header entry must be a JSON object with dtype, shape and data_offsets, found a number"),
            (#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, "w", "header entry is missing field 'dtype'"),
            (#"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, "w", "header entry is missing field 'shape'"),
            (#"{"w":{"dtype":"F32","shape":[1]}}"#, "w", "header entry is missing field 'data_offsets'"),
            (#"{"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}"#, "w", "field 'dtype' must be a string, found a number"),
            (#"{"w":{"dtype":"F32","shape":1,"data_offsets":[0,4]}}"#, "w", "field 'shape' must be an array of non-negative integers, found a number"),
            (#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, "w", "dimension 0 must be a non-negative integer, found -1"),
            (#"{"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}"#, "w", "dimension 0 must be a non-negative integer, found 1.0"),
            (#"{"w":{"dtype":"F32","shape":[1e2],"data_offsets":[0,4]}}"#, "w", "found 1e2"),
            (#"{"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}"#, "w", "found \"1\""),
            (#"{"w":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}"#, "w", "found 99999999999999999999"),
            (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, "w", "field 'data_offsets' must be an array of 2 non-negative integers [begin, end], found [0, 4, 8]"),
            (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}}"#, "w", "found [4]"),
            (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":{"a":0}}}"#, "w", "found an object"),
            (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, "w", "found [-4, 0]"),
            (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,null]}}"#, "w", "found [0, null]"),
            (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, "w", "field 'data_offsets' [8, 4]: begin is after end"),
            (#"{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, "w", "unknown dtype 'F33' (known: BOOL, F4,"),
            (#"{"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}"#, "w", "unknown dtype 'f32'"),
            (#"{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#, "w", "dtype F8_E4M3 is not supported (supported: BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64)"),
            (#"{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#, "w", "dtype F4 is not supported"),
            (#"{"w":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,3]}}"#, "w", "dtype F6_E2M3 is not supported"),
            (#"{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#, "w", "dtype C64 is not supported"),
            (#"{"w":{"dtype":"F32","shape":[1],"dtype":"F16","data_offsets":[0,4]}}"#, "w", "duplicate field 'dtype' in header entry"),
            (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
             "w", "duplicate tensor name in header"),
            (#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, "w", "shape [4294967296, 4294967296]: element count overflows"),
            (#"{"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}}"#, "w", "shape [2305843009213693952] of F64: byte size overflows"),
            (#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#, "w", "shape [2, 3] of F32 needs 24 bytes (6 × 4), but data_offsets [0, 20] span 20 bytes"),
            (#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[0,4]}}"#, "w", "needs 0 bytes"),
            (#"{"__metadata__":["a"]}"#, "__metadata__", "must be a JSON object mapping strings to strings, found an array"),
            (#"{"__metadata__":{"format":1}}"#, "__metadata__", "value of metadata key 'format' must be a string, found a number"),
            (#"{"__metadata__":{"a":{"b":"c"}}}"#, "__metadata__", "value of metadata key 'a' must be a string, found an object"),
            (#"{"__metadata__":{"a":"1","a":"2"}}"#, "__metadata__", "duplicate metadata key 'a'"),
            (#"{"__metadata__":{},"__metadata__":{}}"#, "__metadata__", "duplicate tensor name"),
        ]
        for c in cases {
            let err = expectDataError(file: name, key: c.key, contains: [c.message]) {
                _ = try SafeTensorsFile(data: stBytes(c.header, payload: [UInt8](repeating: 0, count: 8)), name: name)
            }
            if c.key == "__metadata__", let err, !c.message.contains("duplicate tensor") {
                #expect(err.description.hasPrefix("\(name): header field '__metadata__': "))
            }
        }
    }

    @Test func refusesBuffersNotEntirelyIndexed() {
        func entry(_ n: String, _ b: Int, _ e: Int) -> String {
            "\"\(n)\":{\"dtype\":\"U8\",\"shape\":[\(e - b)],\"data_offsets\":[\(b),\(e)]}"
        }
        let cases: [(entries: [String], payload: Int, key: String?, message: String)] = [
            ([entry("a", 0, 4), entry("b", 2, 6)], 6, "b", "data_offsets [2, 6] overlaps tensor 'a', which ends at 4"),
            ([entry("a", 0, 4), entry("b", 0, 4)], 4, "b", "data_offsets [0, 4] overlaps tensor 'a'"),
            ([entry("a", 0, 4), entry("b", 5, 6)], 6, "b", "data_offsets [5, 6] leaves a gap after tensor 'a', which ends at 4"),
            ([entry("a", 1, 4)], 4, "a", "data_offsets [1, 4]: the first tensor must start at offset 0 of the byte buffer"),
            ([entry("a", 0, 4)], 5, "a", "tensors index 4 bytes of the byte buffer, but the file holds 5 bytes after the header"),
            ([entry("a", 0, 4)], 3, "a", "tensors index 4 bytes of the byte buffer, but the file holds 3 bytes"),
            ([], 2, nil, "tensors index 0 bytes of the byte buffer, but the file holds 2 bytes"),
            ([entry("a", 0, 9_000_000_000_000_000_000)], 4, "a", "tensors index 9000000000000000000 bytes"),
        ]
        for c in cases {
            let header = "{" + c.entries.joined(separator: ",") + "}"
            expectDataError(file: name, key: c.key, contains: [c.message]) {
                _ = try SafeTensorsFile(data: stBytes(header, payload: [UInt8](repeating: 1, count: c.payload)), name: name)
            }
        }
    }

    @Test func acceptsValidEdgeCases() throws {
        // Space-padded header, whitespace inside, escaped and non-ASCII names, unaligned data,
        // extra fields in an entry (ignored, as the reference parser does), empty tensors at the end.
        let header = "{ \"\\u00e9t\\u00E9\\n\" : {\"dtype\":\"F32\", \"shape\":[2], \"data_offsets\":[0,8], \"extra\": [1, {\"x\": null}]},"
            + "\"z\":{\"dtype\":\"I16\",\"shape\":[0,7],\"data_offsets\":[8,8]}, \"__metadata__\": {} }     "
        let payload: [UInt8] = [0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0]
        let f = try SafeTensorsFile(data: stBytes(header, payload: payload), name: name)
        #expect(f.names == ["été\n", "z"])
        #expect(f.metadata.isEmpty)
        #expect(try f.tensor("été\n").storage == [1, -2])
        #expect(try f.tensor("z").shape == [0, 7])
        #expect(try f.int64Values("z") == [])
        // A file of only "{}" with no data.
        #expect(try SafeTensorsFile(data: stBytes("{}"), name: name).entries.isEmpty)
        // Data that is a slice of a larger buffer (non-zero startIndex).
        let big = Data([9, 9, 9]) + stBytes(header, payload: payload)
        let sliced = try SafeTensorsFile(data: big[3...], name: name)
        #expect(try sliced.tensor("été\n").storage == [1, -2])
        #expect(try sliced.rawBytes("été\n") == Data(payload))
    }

    /// make_st_torch, make_st_numpy: thousands of corrupted copies (byte flips, truncations, header
    /// length changes) never crash the reader; whatever opens reads every tensor without trapping.
    @Test func corruptedFilesNeverCrash() throws {
        var g = SeededGenerator(seed: 7)
        for fname in ["st_torch_dtypes.safetensors", "st_numpy_f32.safetensors", "st_numpy_f16.safetensors"] {
            let original = [UInt8](try FormatFixtures.data(fname))
            for trial in 0..<1500 {
                var bytes = original
                switch trial % 3 {
                case 0:
                    for _ in 0..<(1 + Int(g.next() % 4)) {
                        bytes[Int(g.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: g.next())
                    }
                case 1:
                    bytes.removeLast(Int(g.next() % UInt64(bytes.count)))
                default:
                    let i = Int(g.next() % 8)
                    bytes[i] = UInt8(truncatingIfNeeded: g.next())
                }
                if let f = try? SafeTensorsFile(data: Data(bytes), name: fname) {
                    for n in f.names {
                        #expect(throws: Never.self) { _ = try f.tensor(n) }
                        _ = try? f.int64Values(n)
                    }
                }
            }
        }
    }

    // MARK: Strict state-dict loading

    private static let convBN: [(name: String, shape: [Int])] = [
        ("0.weight", [4, 3, 3, 3]), ("1.weight", [4]), ("1.bias", [4]),
        ("1.running_mean", [4]), ("1.running_var", [4]), ("1.num_batches_tracked", []),
    ]

    /// make_st_torch: a DataParallel-style state dict ("module." prefix) loads under the model's names.
    @Test func loadsModulePrefixedStateDict() throws {
        let fname = "st_torch_module_prefix.safetensors"
        let file = try SafeTensorsFile.read(FormatFixtures.url(fname))
        let sd = try loadStateDict(from: file, expected: Self.convBN)
        #expect(Set(sd.keys) == Set(Self.convBN.map(\.name)))
        let rec = FormatFixtures.record(fname, tensor: "module.0.weight")
        #expect(sd["0.weight"]?.storage.map(\.bitPattern) == FormatFixtures.bits(rec))
        #expect(sd["1.running_var"]?.storage == [1, 1, 1, 1])
        #expect(sd["1.num_batches_tracked"]?.storage == [0])
    }

    @Test func optionalKeysMayBeMissing() throws {
        let dir = try TempDir()
        let url = dir.file("model.safetensors")
        try SafeTensorsFile.write([("bn.weight", Tensor(shape: [2], storage: [1, 2]))], to: url)
        let file = try SafeTensorsFile.read(url)
        let sd = try loadStateDict(from: file, expected: [("bn.weight", [2]), ("bn.num_batches_tracked", [])],
                                   optional: ["bn.num_batches_tracked"])
        #expect(sd.count == 1 && sd["bn.weight"]?.storage == [1, 2])
    }

    /// The std predicate both normalisation checks share. Its boundary, 2^-128, sits inside the subnormals: 2^-127 passes
    /// (its reciprocal 2^127 is finite), 2^-128 does not (2^128 overflows float32); nor do zero, negatives, infinity, NaN.
    @Test func usableStandardDeviations() {
        for s: Float in [1, 0.229, .leastNormalMagnitude, Float(bitPattern: 0x0040_0000), .greatestFiniteMagnitude] {
            #expect(isUsableStandardDeviation(s), "\(s)")
        }
        for s: Float in [0, -0.0, -1, .leastNonzeroMagnitude, Float(bitPattern: 0x0020_0000), .infinity, .nan] {
            #expect(!isUsableStandardDeviation(s), "\(s)")
        }
    }

    @Test func stateDictShapeMismatchMessage() throws {
        let data = try SafeTensorsFile.encode([("block1.layer.0.bn1.weight", Tensor(shape: [16]))])
        let file = try SafeTensorsFile(data: data, name: "model.safetensors")
        let err = expectDataError(file: "model.safetensors", key: "block1.layer.0.bn1.weight",
                                  contains: ["expected shape [160], found [16]"]) {
            _ = try loadStateDict(from: file, expected: [("block1.layer.0.bn1.weight", [160])])
        }
        #expect(err?.description == "model.safetensors: tensor 'block1.layer.0.bn1.weight': expected shape [160], found [16]")
    }

    @Test func stateDictSingleMissingOrUnexpectedKey() throws {
        let data = try SafeTensorsFile.encode([("module.a", Tensor(shape: [1])), ("module.b", Tensor(shape: [2]))])
        let file = try SafeTensorsFile(data: data, name: "m.safetensors")
        expectDataError(file: "m.safetensors", key: "c", contains: ["missing from the file (the model expects shape [3])"]) {
            _ = try loadStateDict(from: file, expected: [("a", [1]), ("b", [2]), ("c", [3])])
        }
        expectDataError(file: "m.safetensors", key: "b", contains: ["unexpected: the model has no parameter or buffer of this name"]) {
            _ = try loadStateDict(from: file, expected: [("a", [1])])
        }
    }

    @Test func stateDictReportsAllProblems() throws {
        var tensors: [(name: String, tensor: Tensor)] = (0..<8).map { ("extra\($0)", Tensor(shape: [1])) }
        tensors.append(("w", Tensor(shape: [3])))
        tensors.append(("v", Tensor(shape: [2, 2])))
        let file = try SafeTensorsFile(data: try SafeTensorsFile.encode(tensors), name: "m.safetensors")
        let expected: [(name: String, shape: [Int])] = [("w", [4]), ("v", [2, 2])] + (0..<7).map { ("gone\($0)", [1]) }
        let err = expectDataError(file: "m.safetensors", key: nil, contains: [
            "state dict does not match the model (16 problems)",
            "7 missing: 'gone0', 'gone1', 'gone2', 'gone3', 'gone4' and 2 more",
            "8 unexpected: 'extra0', 'extra1', 'extra2', 'extra3', 'extra4' and 3 more",
            "1 with the wrong shape: 'w' expected shape [4], found [3]",
        ]) {
            _ = try loadStateDict(from: file, expected: expected)
        }
        #expect(err?.description.contains("'v'") == false)
    }

    @Test func stateDictRefusesPrefixCollisions() throws {
        let data = try SafeTensorsFile.encode([("module.a", Tensor(shape: [1])), ("a", Tensor(shape: [1]))])
        let file = try SafeTensorsFile(data: data, name: "m.safetensors")
        expectDataError(file: "m.safetensors", key: "a", contains: ["appears twice once the 'module.' prefix is stripped"]) {
            _ = try loadStateDict(from: file, expected: [("a", [1])])
        }
    }
}
