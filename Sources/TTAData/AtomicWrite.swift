import Foundation

/// Writes `data` to `url` atomically: a temporary file in the same directory, written, flushed to disk
/// (`fsync`), then renamed over the target, and the directory flushed. A process killed at any point
/// leaves either the old file or the new one, never half of one (at worst a stray `.<name>.<pid>.tmp`).
/// The one helper every result, report, checkpoint, safetensors and npy file is written with.
public func writeAtomically(_ data: Data, to url: URL) throws {
    let dir = url.deletingLastPathComponent()
    let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
    func fail(_ what: String) -> DataError {
        DataError(file: url.path, message: "cannot write file: \(what) (\(String(cString: strerror(errno))))")
    }
    let fd = open(tmp.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw fail("cannot create a temporary file in \(dir.path)") }
    do {
        if let e = data.withUnsafeBytes({ writeFully($0, to: fd) }) {
            errno = e
            throw fail("write failed")
        }
        guard fsync(fd) == 0 else { throw fail("fsync failed") }
        guard close(fd) == 0 else { throw fail("close failed") }
    } catch {
        close(fd)
        unlink(tmp.path)
        throw error
    }
    guard rename(tmp.path, url.path) == 0 else {
        let e = fail("rename failed")
        unlink(tmp.path)
        throw e
    }
    let dirfd = open(dir.path, O_RDONLY)
    if dirfd >= 0 { _ = fsync(dirfd); close(dirfd) }
}

/// Writes all of `bytes` to the open file descriptor `fd`, again after a signal interrupts it; the `errno` of the
/// write that failed (a closed pipe, a full disk), nil when everything was written.
public func writeFully(_ bytes: UnsafeRawBufferPointer, to fd: Int32) -> Int32? {
    var done = 0
    while done < bytes.count {
        let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return n < 0 ? errno : EIO }
        done += n
    }
    return nil
}
