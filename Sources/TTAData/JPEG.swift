import Foundation

/// A decoded JPEG image: 8-bit samples in row-major HWC order (`channels` is 1 for grayscale, 3 for RGB).
///
/// The decoder handles the JPEGs corruption benchmarks ship (ImageNet-C, Tiny-ImageNet-C): baseline
/// and extended sequential Huffman-coded DCT (SOF0, SOF1) with 8-bit samples, one component
/// (grayscale) or three (YCbCr, or RGB when an Adobe marker or the component ids say so), any sampling
/// factors that divide the largest one (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1…), several scans, restart
/// intervals, and any image size. APPn and COM segments are skipped.
///
/// Pixels match Pillow's (libjpeg-turbo with its defaults) to within ±1, and usually exactly: the
/// same integer IDCT, chroma upsampling and colour conversion are used (see `JPEGIDCT.swift`).
///
/// Progressive, hierarchical, lossless, arithmetic-coded and 12-bit files, and CMYK / YCCK (4
/// components), are refused. So are damaged files: every error is a `DataError` naming the file, the
/// segment at fault and the byte offset. The decoder validates every segment length and Huffman table
/// and bounds every loop by the file size or the image size, so hostile input cannot crash it.
public struct JPEGImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// 1 (grayscale) or 3 (RGB).
    public let channels: Int
    /// `height * width * channels` samples, row-major, channels interleaved.
    public let pixels: [UInt8]

    /// Images with more pixels than this are refused before any large allocation.
    public static let maxPixelCount = 1 << 28

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels)
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// Decodes in-memory JPEG data; `file` names it in error messages. An image of more than `maxPixelCount`
    /// pixels (at most `JPEGImage.maxPixelCount`) is refused at its frame header, before any large allocation.
    public static func decode(_ data: Data, file: String = "<memory>", maxPixelCount: Int = JPEGImage.maxPixelCount) throws -> JPEGImage {
        var decoder = JPEGDecoder(bytes: [UInt8](data), file: file, maxPixelCount: maxPixelCount)
        return try decoder.decode()
    }

    /// Reads and decodes the JPEG file at `url`, refusing images of more than `maxPixelCount` pixels at their
    /// frame header (`decode`).
    public static func read(_ url: URL, maxPixelCount: Int = JPEGImage.maxPixelCount) throws -> JPEGImage {
        try decode(try readFileContents(url, mapped: false), file: url.path, maxPixelCount: maxPixelCount)
    }
}

/// One component of the frame, with its decoded samples.
private struct JPEGComponent {
    let id: UInt8
    let h: Int
    let v: Int
    let quantTable: Int
    /// Samples actually in the image: ceil(image size × factor / largest factor).
    var width = 0
    var height = 0
    /// Blocks per row and per column in a scan of this component alone.
    var blocksWide = 0
    var blocksHigh = 0
    /// The decoded samples, padded to whole MCUs; rows are `stride` samples apart.
    var stride = 0
    var samples: [UInt8] = []
    /// Dequantization factors in zigzag order, latched when the component's scan starts.
    var quant: [Int32] = []
    var decoded = false
}

private struct JPEGFrame {
    let marker: UInt8
    let width: Int
    let height: Int
    var components: [JPEGComponent]
    let hMax: Int
    let vMax: Int
    let mcusWide: Int
    let mcusHigh: Int
}

struct JPEGDecoder {
    let bytes: [UInt8]
    let file: String
    /// The most pixels the frame header may declare (`JPEGImage.maxPixelCount` at most).
    let maxPixelCount: Int
    private var quantTables: [[Int32]?] = Array(repeating: nil, count: 4)
    private var dcTables: [JPEGHuffmanTable?] = Array(repeating: nil, count: 4)
    private var acTables: [JPEGHuffmanTable?] = Array(repeating: nil, count: 4)
    private var restartInterval = 0
    private var frame: JPEGFrame?
    private var sawJFIF = false
    private var adobeTransform: Int?
    private var block = [Int32](repeating: 0, count: 64)

    init(bytes: [UInt8], file: String, maxPixelCount: Int = JPEGImage.maxPixelCount) {
        self.bytes = bytes
        self.file = file
        self.maxPixelCount = min(max(0, maxPixelCount), JPEGImage.maxPixelCount)
    }

    // MARK: Errors

    private func fail(_ segment: String?, _ message: String, at offset: Int) -> DataError {
        DataError(file: file, key: segment, keyKind: "segment", message: "\(message) (at byte \(offset))")
    }

    static func markerName(_ m: UInt8) -> String {
        switch m {
        case 0xC4: "DHT"
        case 0xC8: "JPG"
        case 0xCC: "DAC"
        case 0xC0...0xCF: "SOF\(m - 0xC0)"
        case 0xD0...0xD7: "RST\(m - 0xD0)"
        case 0xD8: "SOI"
        case 0xD9: "EOI"
        case 0xDA: "SOS"
        case 0xDB: "DQT"
        case 0xDC: "DNL"
        case 0xDD: "DRI"
        case 0xDE: "DHP"
        case 0xDF: "EXP"
        case 0xE0...0xEF: "APP\(m - 0xE0)"
        case 0xFE: "COM"
        default: String(format: "marker FF%02X", m)
        }
    }

    private func u16(_ i: Int) -> Int { Int(bytes[i]) << 8 | Int(bytes[i + 1]) }

    // MARK: Marker loop

    mutating func decode() throws -> JPEGImage {
        guard bytes.count >= 2, bytes[0] == 0xFF, bytes[1] == 0xD8 else {
            let found = bytes.prefix(2).map { String(format: "%02X", $0) }.joined(separator: " ")
            throw fail(nil, "not a JPEG file: expected the SOI marker FF D8, found \(found.isEmpty ? "an empty file" : found)", at: 0)
        }
        var pos = 2
        while true {
            // Find the next marker, allowing 0xFF fill bytes before it.
            guard pos < bytes.count else {
                if let frame, frame.components.allSatisfy(\.decoded) { break }  // a missing EOI is tolerated
                throw fail(nil, "truncated: the file ends (\(bytes.count) bytes) before \(frame == nil ? "a frame header (SOF)" : "the end of the image")", at: pos)
            }
            guard bytes[pos] == 0xFF else {
                throw fail(nil, String(format: "expected a marker (FF xx), found byte %02X", bytes[pos]), at: pos)
            }
            var start = pos
            while start + 1 < bytes.count, bytes[start + 1] == 0xFF { start += 1 }
            guard start + 1 < bytes.count else {
                throw fail(nil, "truncated: the file ends inside a marker", at: start)
            }
            let m = bytes[start + 1]
            let name = Self.markerName(m)
            if m == 0xD9 { break }
            if (0xD0...0xD7).contains(m) || m == 0x01 { pos = start + 2; continue }  // stray standalone markers
            if m == 0xD8 || m == 0x00 { throw fail(name, "unexpected marker", at: start) }
            guard start + 4 <= bytes.count else {
                throw fail(name, "truncated: the file ends inside the segment length", at: start)
            }
            let length = u16(start + 2)
            guard length >= 2 else { throw fail(name, "segment length \(length) is less than 2", at: start) }
            let body = start + 4, end = start + 2 + length
            guard end <= bytes.count else {
                throw fail(name, "truncated: segment length \(length) runs past the end of the file (\(bytes.count) bytes)", at: start)
            }
            switch m {
            case 0xC0, 0xC1: try readFrame(marker: m, body: body, end: end, at: start)
            case 0xC2, 0xC6:
                throw fail(name, "progressive JPEG is not supported (only baseline and extended sequential, SOF0/SOF1)", at: start)
            case 0xC3, 0xC7:
                throw fail(name, "lossless JPEG is not supported (only baseline and extended sequential, SOF0/SOF1)", at: start)
            case 0xC5:
                throw fail(name, "hierarchical JPEG is not supported (only baseline and extended sequential, SOF0/SOF1)", at: start)
            case 0xC9...0xCB, 0xCD...0xCF:
                throw fail(name, "arithmetic coding is not supported (only Huffman coding, SOF0/SOF1)", at: start)
            case 0xC4: try readHuffmanTables(body: body, end: end, at: start)
            case 0xDB: try readQuantTables(body: body, end: end, at: start)
            case 0xDD:
                guard length == 4 else { throw fail(name, "segment length is \(length), expected 4", at: start) }
                restartInterval = u16(body)
            case 0xDC: throw fail(name, "DNL (image height defined after the scan) is not supported", at: start)
            case 0xDA:
                pos = try readScan(body: body, end: end, at: start)
                continue
            case 0xE0:
                if length >= 7, Array(bytes[body..<(body + 5)]) == Array("JFIF\0".utf8) { sawJFIF = true }
            case 0xEE:
                if length >= 14, Array(bytes[body..<(body + 5)]) == Array("Adobe".utf8) { adobeTransform = Int(bytes[body + 11]) }
            default: break  // APPn, COM, DAC and reserved segments are skipped
            }
            pos = end
        }
        return try output()
    }

    // MARK: Segments

    private mutating func readFrame(marker: UInt8, body: Int, end: Int, at offset: Int) throws {
        let name = Self.markerName(marker)
        guard frame == nil else { throw fail(name, "a second frame header; only one frame is supported", at: offset) }
        guard end - body >= 6 else { throw fail(name, "segment is \(end - body + 2) bytes, too short for a frame header", at: offset) }
        let precision = Int(bytes[body])
        guard precision == 8 else {
            throw fail(name, "sample precision \(precision)-bit is not supported (only 8-bit)", at: offset)
        }
        let height = u16(body + 1), width = u16(body + 3), count = Int(bytes[body + 5])
        guard height > 0 else {
            throw fail(name, "image height 0 (height given later by a DNL marker) is not supported", at: offset)
        }
        guard width > 0 else { throw fail(name, "image width is 0", at: offset) }
        guard count == 1 || count == 3 else {
            throw fail(name, "\(count) components are not supported (only 1, grayscale, or 3, YCbCr/RGB; CMYK and YCCK have 4)", at: offset)
        }
        guard end - body == 6 + 3 * count else {
            throw fail(name, "segment length \(end - body + 2) does not match \(count) components (expected \(8 + 3 * count))", at: offset)
        }
        guard width * height <= maxPixelCount else {
            throw fail(name, "image of \(width)x\(height) pixels exceeds the limit of \(maxPixelCount) pixels", at: offset)
        }
        var components: [JPEGComponent] = []
        for i in 0..<count {
            let p = body + 6 + 3 * i
            let id = bytes[p], h = Int(bytes[p + 1] >> 4), v = Int(bytes[p + 1] & 15), tq = Int(bytes[p + 2])
            guard (1...4).contains(h), (1...4).contains(v) else {
                throw fail(name, "component \(id) has sampling factors \(h)x\(v), outside the allowed 1...4", at: offset)
            }
            guard tq <= 3 else { throw fail(name, "component \(id) uses quantization table \(tq); tables are 0...3", at: offset) }
            guard !components.contains(where: { $0.id == id }) else {
                throw fail(name, "component id \(id) appears twice", at: offset)
            }
            components.append(JPEGComponent(id: id, h: h, v: v, quantTable: tq))
        }
        let hMax = components.map(\.h).max() ?? 1, vMax = components.map(\.v).max() ?? 1
        for c in components where hMax % c.h != 0 || vMax % c.v != 0 {
            throw fail(name, "component \(c.id) has sampling factors \(c.h)x\(c.v), which do not divide the largest (\(hMax)x\(vMax)); such fractional sampling is not supported", at: offset)
        }
        let mcusWide = (width + 8 * hMax - 1) / (8 * hMax), mcusHigh = (height + 8 * vMax - 1) / (8 * vMax)
        for i in components.indices {
            let c = components[i]
            components[i].width = (width * c.h + hMax - 1) / hMax
            components[i].height = (height * c.v + vMax - 1) / vMax
            components[i].blocksWide = (components[i].width + 7) / 8
            components[i].blocksHigh = (components[i].height + 7) / 8
            components[i].stride = mcusWide * c.h * 8
        }
        frame = JPEGFrame(marker: marker, width: width, height: height, components: components, hMax: hMax, vMax: vMax,
                          mcusWide: mcusWide, mcusHigh: mcusHigh)
    }

    private mutating func readQuantTables(body: Int, end: Int, at offset: Int) throws {
        var p = body
        while p < end {  // each table consumes at least 65 bytes
            let precision = Int(bytes[p] >> 4), id = Int(bytes[p] & 15)
            guard precision <= 1 else { throw fail("DQT", "table \(id) has precision code \(precision), expected 0 (8-bit) or 1 (16-bit)", at: offset) }
            guard id <= 3 else { throw fail("DQT", "table id \(id) is out of range 0...3", at: offset) }
            let size = 64 * (precision + 1)
            guard p + 1 + size <= end else {
                throw fail("DQT", "table \(id) needs \(size) bytes but the segment has \(end - p - 1) left", at: offset)
            }
            quantTables[id] = (0..<64).map { k in
                precision == 0 ? Int32(bytes[p + 1 + k]) : Int32(u16(p + 1 + 2 * k))
            }
            p += 1 + size
        }
    }

    private mutating func readHuffmanTables(body: Int, end: Int, at offset: Int) throws {
        var p = body
        while p < end {  // each table consumes at least 17 bytes
            let cls = Int(bytes[p] >> 4), id = Int(bytes[p] & 15)
            guard cls <= 1, id <= 3 else {
                throw fail("DHT", "table class \(cls) / id \(id) is invalid (class 0 = DC or 1 = AC, id 0...3)", at: offset)
            }
            guard p + 17 <= end else { throw fail("DHT", "segment ends inside the 16 code-length counts", at: offset) }
            let counts = (0..<16).map { Int(bytes[p + 1 + $0]) }
            let total = counts.reduce(0, +)
            guard p + 17 + total <= end else {
                throw fail("DHT", "\(cls == 0 ? "DC" : "AC") table \(id) declares \(total) codes but the segment has only \(end - p - 17) bytes left", at: offset)
            }
            let values = Array(bytes[(p + 17)..<(p + 17 + total)])
            do {
                let table = try JPEGHuffmanTable(counts: counts, values: values)
                if cls == 0 { dcTables[id] = table } else { acTables[id] = table }
            } catch {
                throw fail("DHT", "\(cls == 0 ? "DC" : "AC") table \(id): \(error.message)", at: offset)
            }
            p += 17 + total
        }
    }

    // MARK: Scans

    /// Decodes one scan; returns the offset of the marker that follows its entropy-coded data.
    private mutating func readScan(body: Int, end: Int, at offset: Int) throws -> Int {
        guard var frame else { throw fail("SOS", "scan before the frame header (SOF)", at: offset) }
        guard end - body >= 1 else { throw fail("SOS", "empty scan header", at: offset) }
        let count = Int(bytes[body])
        guard (1...frame.components.count).contains(count), end - body == 4 + 2 * count else {
            throw fail("SOS", "scan header with \(count) components and length \(end - body + 2) is invalid for a frame of \(frame.components.count) components", at: offset)
        }
        var members: [(index: Int, dc: JPEGHuffmanTable, ac: JPEGHuffmanTable)] = []
        for i in 0..<count {
            let id = bytes[body + 1 + 2 * i], td = Int(bytes[body + 2 + 2 * i] >> 4), ta = Int(bytes[body + 2 + 2 * i] & 15)
            guard let index = frame.components.firstIndex(where: { $0.id == id }) else {
                throw fail("SOS", "component id \(id) is not in the frame", at: offset)
            }
            guard !members.contains(where: { $0.index == index }) else {
                throw fail("SOS", "component id \(id) appears twice in the scan", at: offset)
            }
            guard !frame.components[index].decoded else {
                throw fail("SOS", "component id \(id) was already decoded by an earlier scan", at: offset)
            }
            guard td <= 3, let dc = dcTables[td] else { throw fail("SOS", "component \(id) uses DC Huffman table \(td), which is not defined", at: offset) }
            guard ta <= 3, let ac = acTables[ta] else { throw fail("SOS", "component \(id) uses AC Huffman table \(ta), which is not defined", at: offset) }
            let tq = frame.components[index].quantTable
            guard let quant = quantTables[tq] else {
                throw fail("SOS", "component \(id) uses quantization table \(tq), which is not defined", at: offset)
            }
            frame.components[index].quant = quant
            members.append((index, dc, ac))
        }
        let ss = Int(bytes[end - 3]), se = Int(bytes[end - 2]), approx = Int(bytes[end - 1])
        guard ss == 0, se == 63, approx == 0 else {
            throw fail("SOS", "spectral selection \(ss)...\(se) and approximation \(approx) are not those of a sequential scan (0...63, 0)", at: offset)
        }
        let interleaved = count > 1
        if interleaved {
            let blocks = members.reduce(0) { $0 + frame.components[$1.index].h * frame.components[$1.index].v }
            guard blocks <= 10 else { throw fail("SOS", "an MCU of \(blocks) blocks exceeds the limit of 10", at: offset) }
        }
        let mcus = interleaved ? frame.mcusWide * frame.mcusHigh
            : frame.components[members[0].index].blocksWide * frame.components[members[0].index].blocksHigh
        let blocksPerMCU = interleaved ? members.reduce(0) { $0 + frame.components[$1.index].h * frame.components[$1.index].v } : 1
        // Each block takes at least 2 bits (a DC code and an end-of-block code): refuse scans the
        // remaining data cannot possibly hold before allocating anything.
        let available = bytes.count - end
        guard mcus * blocksPerMCU <= 4 * available else {
            throw fail("SOS", "truncated: the scan has \(mcus * blocksPerMCU) blocks (at least 2 bits each) but only \(available) bytes follow", at: offset)
        }
        for m in members where frame.components[m.index].samples.isEmpty {
            let c = frame.components[m.index]
            frame.components[m.index].samples = [UInt8](repeating: 0, count: c.stride * frame.mcusHigh * c.v * 8)
        }

        var reader = JPEGBitReader(bytes: bytes, position: end)
        var predictors = [Int](repeating: 0, count: count)
        var restarts = 0
        for mcu in 0..<mcus {
            if restartInterval > 0, mcu > 0, mcu % restartInterval == 0 {
                let expected = UInt8(0xD0 + restarts % 8)
                guard let (m, _) = reader.nextMarker(), m == expected else {
                    let found = reader.position < bytes.count ? Self.markerName(bytes[min(reader.position + 1, bytes.count - 1)]) : "the end of the file"
                    throw fail("SOS", "expected restart marker \(Self.markerName(expected)) before MCU \(mcu) of \(mcus), found \(found)", at: reader.position)
                }
                reader.skipMarker()
                restarts += 1
                for i in predictors.indices { predictors[i] = 0 }
            }
            for (slot, member) in members.enumerated() {
                let c = frame.components[member.index]
                let (mx, my) = interleaved ? (mcu % frame.mcusWide, mcu / frame.mcusWide) : (mcu % c.blocksWide, mcu / c.blocksWide)
                let (bh, bv) = interleaved ? (c.h, c.v) : (1, 1)
                for by in 0..<bv {
                    for bx in 0..<bh {
                        try decodeBlock(&reader, dc: member.dc, ac: member.ac, predictor: &predictors[slot], quant: c.quant,
                                        mcu: mcu, of: mcus)
                        let x = (mx * bh + bx) * 8, y = (my * bv + by) * 8
                        JPEGIDCT.transform(&block, into: &frame.components[member.index].samples, offset: y * c.stride + x,
                                           stride: c.stride)
                    }
                }
            }
        }
        for m in members { frame.components[m.index].decoded = true }
        self.frame = frame
        guard let (_, next) = reader.nextMarker() else { return bytes.count }
        return next
    }

    /// Decodes one block's Huffman-coded coefficients, dequantizes them into `block` (row-major).
    private mutating func decodeBlock(_ reader: inout JPEGBitReader, dc: JPEGHuffmanTable, ac: JPEGHuffmanTable,
                                      predictor: inout Int, quant: [Int32], mcu: Int, of mcus: Int) throws {
        for i in 0..<64 { block[i] = 0 }
        guard let t = reader.symbol(dc) else { throw badCode(reader, "DC", mcu: mcu, of: mcus) }
        guard t <= 11 else {
            throw fail("SOS", "DC difference category \(t) exceeds 11 in MCU \(mcu) of \(mcus)", at: reader.position)
        }
        // libjpeg keeps coefficients as 16-bit values.
        predictor = Int(Int16(truncatingIfNeeded: predictor + reader.receiveExtend(Int(t))))
        block[0] = Int32(predictor) &* quant[0]
        var k = 1
        while k < 64 {
            guard let rs = reader.symbol(ac) else { throw badCode(reader, "AC", mcu: mcu, of: mcus) }
            let run = Int(rs >> 4), size = Int(rs & 15)
            if size == 0 {
                if run != 15 { break }  // end of block
                k += 16
                continue
            }
            k += run
            guard k < 64 else {
                throw fail("SOS", "corrupt data: AC coefficients run past the end of the block in MCU \(mcu) of \(mcus)", at: reader.position)
            }
            let value = Int32(Int16(truncatingIfNeeded: reader.receiveExtend(size)))
            block[jpegZigzag[k]] = value &* quant[k]
            k += 1
        }
        if reader.overran {
            throw fail("SOS", "truncated: the entropy-coded data ends in MCU \(mcu) of \(mcus)", at: reader.position)
        }
    }

    private func badCode(_ reader: JPEGBitReader, _ kind: String, mcu: Int, of mcus: Int) -> DataError {
        if reader.overran {
            return fail("SOS", "truncated: the entropy-coded data ends in MCU \(mcu) of \(mcus)", at: reader.position)
        }
        return fail("SOS", "corrupt data: invalid \(kind) Huffman code in MCU \(mcu) of \(mcus)", at: reader.position)
    }

    // MARK: Output

    private func output() throws -> JPEGImage {
        guard let frame else { throw fail(nil, "no scan: the image ends before a frame header (SOF)", at: bytes.count) }
        for c in frame.components where !c.decoded {
            throw fail(nil, "no scan decoded component \(c.id) before the end of the image", at: bytes.count)
        }
        let w = frame.width, h = frame.height
        let planes = frame.components.map { c in
            JPEGUpsample.upsample(c.samples, width: c.width, height: c.height, stride: c.stride,
                                  hr: frame.hMax / c.h, vr: frame.vMax / c.v, outWidth: w, outHeight: h)
        }
        if planes.count == 1 { return JPEGImage(width: w, height: h, channels: 1, pixels: planes[0]) }
        // libjpeg's colour-space guess for 3 components: JFIF means YCbCr; else an Adobe marker's
        // transform flag; else component ids 'R', 'G', 'B' mean RGB; else YCbCr.
        let isRGB: Bool
        if sawJFIF { isRGB = false }
        else if let adobeTransform { isRGB = adobeTransform == 0 }
        else { isRGB = frame.components.map(\.id) == [0x52, 0x47, 0x42] }
        let pixels = isRGB ? JPEGColor.interleave(planes[0], planes[1], planes[2])
            : JPEGColor.ycbcrToRGB(planes[0], planes[1], planes[2])
        return JPEGImage(width: w, height: h, channels: 3, pixels: pixels)
    }
}
