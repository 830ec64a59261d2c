import Foundation
import Testing
@testable import TTAData

// Expected digests: Tests/Fixtures/hash/sha256.json, written with hashlib by
// scripts/make_hash_fixtures.py (`message_vectors()` and `file_vectors()`).

private enum HashFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func load() throws -> [String: Any] {
        let data = try Data(contentsOf: root.appendingPathComponent("Tests/Fixtures/hash/sha256.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// The generator's `pattern(n)`: (i * 31 + 7) mod 251.
    static func pattern(_ n: Int) -> [UInt8] { (0..<n).map { UInt8((($0 * 31) + 7) % 251) } }
}

@Suite("SHA-256")
struct SHA256Tests {
    /// `message_vectors()`: padding edges 55/56/64 bytes, multi-block, "abc", a million 'a'.
    @Test func messagesMatchHashlib() throws {
        let vectors = try #require(try HashFixtures.load()["messages"] as? [[String: Any]])
        #expect(vectors.count == 17)
        for v in vectors {
            let expected = try #require(v["sha256"] as? String)
            let message: [UInt8]
            switch v["kind"] as? String {
            case "pattern": message = HashFixtures.pattern(try #require(v["length"] as? Int))
            case "text": message = Array(try #require(v["text"] as? String).utf8)
            default: message = [UInt8](repeating: UInt8(ascii: "a"), count: try #require(v["length"] as? Int))
            }
            #expect(SHA256.hex(message) == expected, "message \(v)")
        }
    }

    /// Feeding the same bytes in uneven pieces gives the one-shot digest (`message_vectors()`, 4099 bytes).
    @Test func incrementalUpdatesMatchOneShot() throws {
        let message = HashFixtures.pattern(4099)
        let oneShot = SHA256.hash(message)
        for piece in [1, 7, 63, 64, 65, 1000] {
            var h = SHA256()
            var i = 0
            while i < message.count { h.update(message[i..<min(i + piece, message.count)]); i += piece }
            #expect(h.finalize() == oneShot, "pieces of \(piece)")
        }
        var h = SHA256()
        h.update(Data(message))
        #expect(h.finalize() == oneShot)
    }

    /// `file_vectors()`: the streaming file path on committed fixture files.
    @Test func filesMatchHashlib() throws {
        let files = try #require(try HashFixtures.load()["files"] as? [[String: Any]])
        #expect(!files.isEmpty)
        for f in files {
            let path = try #require(f["path"] as? String)
            #expect(try SHA256.hex(fileAt: HashFixtures.root.appendingPathComponent(path)) == f["sha256"] as? String, "\(path)")
        }
    }

    @Test func missingFileNamesThePath() {
        let url = URL(fileURLWithPath: "/nonexistent/weights.safetensors")
        #expect(throws: DataError.self) { try SHA256.hex(fileAt: url) }
        do { _ = try SHA256.hex(fileAt: url); Issue.record("no error") } catch {
            #expect("\(error)".contains("/nonexistent/weights.safetensors"))
        }
    }
}
