import Foundation
import Testing
@testable import TTAData

// Fixtures in Tests/Fixtures/jpeg/ are written by scripts/make_jpeg_fixtures.py. Each file name starts
// with the name of the script function that wrote it (minus "make_"): gray_*, rgb444_*, rgb422_*,
// rgb420_*, restart_*, extras_*, unsupported_*, corrupt_*. expected.json says, for every .jpg, either
// which .npy holds Pillow's decoded pixels or which text the decoder's error must contain.

enum JPEGFixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/jpeg")

    static let expected: [String: [String: String]] = {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent("expected.json")),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: [String: Any]] else { return [:] }
        return object.mapValues { $0.compactMapValues { $0 as? String } }
    }()

    static let valid = expected.filter { $0.value["pixels"] != nil }.keys.sorted()
    static let hostile = expected.filter { $0.value["error"] != nil }.keys.sorted()

    /// The script function that wrote `file`.
    static func generator(_ file: String) -> String {
        "make_" + (file.split(separator: "_").first.map(String.init) ?? file)
    }
}

@Suite("JPEG decoder")
struct JPEGTests {
    @Test("the fixture set is present (make_jpeg_fixtures.py)")
    func fixturesPresent() {
        #expect(JPEGFixtures.valid.count >= 20)
        #expect(JPEGFixtures.hostile.count >= 15)
    }

    @Test("valid files decode to Pillow's pixels within ±1 (make_gray, make_rgb444, make_rgb422, make_rgb420, make_restart, make_extras)",
          arguments: JPEGFixtures.valid)
    func matchesPillow(_ name: String) throws {
        let url = JPEGFixtures.directory.appendingPathComponent(name)
        let record = try #require(JPEGFixtures.expected[name])
        let reference = try NPYFile.read(JPEGFixtures.directory.appendingPathComponent(try #require(record["pixels"])))
        let image = try JPEGImage.read(url)
        let shape = reference.shape
        let channels = record["mode"] == "L" ? 1 : 3
        #expect(image.channels == channels, "\(name) (\(JPEGFixtures.generator(name)))")
        #expect([image.height, image.width] == Array(shape.prefix(2)), "\(name): size \(image.width)x\(image.height) vs Pillow \(shape)")
        let expected = try reference.uint8Rows(0..<shape[0])
        try #require(image.pixels.count == expected.count)
        var maxDiff = 0, differing = 0
        for (a, b) in zip(image.pixels, expected) {
            let d = abs(Int(a) - Int(b))
            maxDiff = max(maxDiff, d)
            if d > 0 { differing += 1 }
        }
        print("JPEG \(name) [\(JPEGFixtures.generator(name))]: max |diff| vs Pillow = \(maxDiff), \(differing) of \(expected.count) samples differ")
        #expect(maxDiff <= 1, "\(name) (\(JPEGFixtures.generator(name))): max diff \(maxDiff), \(differing) samples differ")
    }

    @Test("unsupported and damaged files are refused with a DataError naming the file (make_unsupported, make_corrupt)",
          arguments: JPEGFixtures.hostile)
    func refusesHostile(_ name: String) throws {
        let url = JPEGFixtures.directory.appendingPathComponent(name)
        let fragment = try #require(JPEGFixtures.expected[name]?["error"])
        do {
            let image = try JPEGImage.read(url)
            Issue.record("\(name) (\(JPEGFixtures.generator(name))): decoded \(image.width)x\(image.height), expected an error containing '\(fragment)'")
        } catch let error as DataError {
            print("JPEG \(name) [\(JPEGFixtures.generator(name))]: \(error)")
            #expect(error.file == url.path)
            #expect(error.description.hasPrefix(url.path + ": "))
            #expect(error.description.contains(fragment), "\(name): '\(error)' does not contain '\(fragment)'")
        }
    }

    @Test("every prefix and truncation of a valid file either decodes or throws a DataError (make_rgb420, make_restart)")
    func everyTruncation() throws {
        for name in ["rgb420_q75_17x13.jpg", "restart_blocks3_rgb420_40x40.jpg"] {
            let data = try Data(contentsOf: JPEGFixtures.directory.appendingPathComponent(name))
            for n in 0..<data.count {
                do {
                    _ = try JPEGImage.decode(data.prefix(n), file: "cut-\(n)")
                } catch let error as DataError {
                    #expect(error.file == "cut-\(n)")
                }
            }
        }
    }

    @Test("single-byte corruptions never crash (make_rgb420)")
    func byteFlips() throws {
        let data = try Data(contentsOf: JPEGFixtures.directory.appendingPathComponent("rgb420_q75_17x13.jpg"))
        var bytes = [UInt8](data)
        for i in 0..<bytes.count {
            for value: UInt8 in [0x00, 0xFF, bytes[i] ^ 0x5A] {
                let saved = bytes[i]
                bytes[i] = value
                do { _ = try JPEGImage.decode(Data(bytes), file: "flip") } catch let error as DataError {
                    #expect(error.file == "flip")
                }
                bytes[i] = saved
            }
        }
    }

    @Test("gigantic declared dimensions are refused before any large allocation (make_rgb420)")
    func giganticDimensions() throws {
        let original = [UInt8](try Data(contentsOf: JPEGFixtures.directory.appendingPathComponent("rgb420_q75_17x13.jpg")))
        let sof = try #require((0..<(original.count - 1)).first { original[$0] == 0xFF && original[$0 + 1] == 0xC0 })
        func claiming(width: Int, height: Int) -> Data {
            var b = original
            (b[sof + 5], b[sof + 6]) = (UInt8(height >> 8), UInt8(height & 0xFF))
            (b[sof + 7], b[sof + 8]) = (UInt8(width >> 8), UInt8(width & 0xFF))
            return Data(b)
        }
        func error(_ data: Data) -> DataError? {
            do { _ = try JPEGImage.decode(data, file: "big.jpg"); return nil } catch { return error as? DataError }
        }
        // Over the pixel limit: refused in the frame header.
        let over = try #require(error(claiming(width: 65535, height: 65535)))
        #expect(over.key == "SOF0" && over.message.hasPrefix("image of 65535x65535 pixels exceeds the limit of 268435456 pixels"))
        // At the limit: refused at the scan, as its few hundred bytes cannot code the 6291456 blocks of 16384x16384 4:2:0.
        let atLimit = try #require(error(claiming(width: 16384, height: 16384)))
        #expect(atLimit.key == "SOS" && atLimit.message.hasPrefix("truncated: the scan has 6291456 blocks (at least 2 bits each) but only"))
    }

    @Test("in-memory data is named in errors")
    func memoryName() throws {
        // A given name is used: SOI, then a lone FF at byte 2 with nothing after it.
        let named = try #require(throws: DataError.self) { try JPEGImage.decode(Data([0xFF, 0xD8, 0xFF]), file: "x.jpg") }
        #expect(named.description == "x.jpg: truncated: the file ends inside a marker (at byte 2)")
        // Without one, "<memory>"; the first two bytes are not the SOI marker.
        let unnamed = try #require(throws: DataError.self) { try JPEGImage.decode(Data([1, 2, 3])) }
        #expect(unnamed.description == "<memory>: not a JPEG file: expected the SOI marker FF D8, found 01 02 (at byte 0)")
    }

    @Test("zigzag order is a permutation starting 0, 1, 8, 16, 9 and ending 62, 63")
    func zigzag() {
        #expect(Set(jpegZigzag) == Set(0..<64))
        #expect(Array(jpegZigzag.prefix(5)) == [0, 1, 8, 16, 9])
        #expect(Array(jpegZigzag.suffix(2)) == [62, 63])
    }

    @Test("a DC-only block gives a flat block; the range limit wraps like libjpeg's table")
    func idctDC() {
        var block = [Int32](repeating: 0, count: 64)
        block[0] = 80  // DC 80 → level 80 / 8 = 10 above mid-grey
        var plane = [UInt8](repeating: 0, count: 64)
        JPEGIDCT.transform(&block, into: &plane, offset: 0, stride: 8)
        #expect(plane.allSatisfy { $0 == 138 })
        #expect(JPEGIDCT.limit(-129) == 0 && JPEGIDCT.limit(127) == 255 && JPEGIDCT.limit(400) == 255)
        #expect(JPEGIDCT.limit(600) == 0)  // wraps to −424, then clamps
    }
}
