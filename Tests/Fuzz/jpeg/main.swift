// libFuzzer target: the baseline JPEG decoder.
// Built and run by scripts/fuzz.sh; not a SwiftPM target.
import Foundation
import TTAData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJPEG(_ bytes: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let data = Data(bytes: bytes, count: size)
    guard let image = try? JPEGImage.decode(data, file: "fuzz.jpg") else { return 0 }
    precondition(image.pixels.count == image.width * image.height * image.channels)
    precondition(image.channels == 1 || image.channels == 3)
    return 0
}
