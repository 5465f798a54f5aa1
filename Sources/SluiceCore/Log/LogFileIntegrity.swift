/// The decisions that keep a completion log file a sequence of whole JSON lines, as pure
/// functions over numbers, so they are tested without a disk (issue 12, item 13).
///
/// The writer thread (CompletionFileSink.swift) gathers the facts with stat/fstat/lseek and acts.

/// Which file an open descriptor or a path refers to (`st_dev`, `st_ino`).
struct FileIdentity: Equatable, Sendable {
    var device: UInt64
    var inode: UInt64
}

/// What became of the log file between two looks, as `tail -F` tells it.
enum LogFileFate: Equatable, Sendable {
    /// The path still names the file the writer has open.
    case same
    /// The open file has no name left (`st_nlink` 0) and the path is gone: records written now
    /// are lost the moment the descriptor closes. Reopen the path at once.
    case deleted
    /// The path names another file (a rotation that renamed ours away and created a new one,
    /// or a delete followed by a create). Reopen the path at once.
    case replaced
    /// The path is gone but the open file still has a name elsewhere (renamed, not yet
    /// replaced: the middle of a logrotate `create` rotation, whose SIGHUP follows). Records
    /// still land in the renamed file, so nothing is lost; reopening now would race the rotator
    /// creating the new file, so the writer waits a grace period first.
    case movedAway
    /// The path cannot be examined (EACCES, EIO): keep writing where we are.
    case unknown

    /// Classifies one look.
    /// - Parameters:
    ///   - open: the identity of the open descriptor (fstat).
    ///   - openLinks: its `st_nlink`.
    ///   - path: the identity of the path (stat), nil when stat failed.
    ///   - pathMissing: stat failed with ENOENT or ENOTDIR (the name, or a directory on the way to it, is gone).
    static func classify(open: FileIdentity, openLinks: UInt64, path: FileIdentity?, pathMissing: Bool) -> LogFileFate {
        if let path { return path == open ? .same : .replaced }
        guard pathMissing else { return .unknown }
        return openLinks == 0 ? .deleted : .movedAway
    }
}

/// Record boundaries in a batch of JSON lines. Every record ends with `\n` and JSON escapes any
/// newline inside a string, so a `\n` byte is always the end of a record.
enum RecordBoundary {
    /// The offset just past the last whole record in `bytes[..<limit]` (0 when none is whole).
    static func lastEnd(in bytes: UnsafeRawBufferPointer, before limit: Int) -> Int {
        var end = min(limit, bytes.count)
        while end > 0 && bytes[end - 1] != UInt8(ascii: "\n") { end -= 1 }
        return end
    }

    /// The number of whole records in `bytes[start..<end]`.
    static func count(in bytes: UnsafeRawBufferPointer, from start: Int, to end: Int) -> Int {
        var records = 0
        var index = start
        while index < end {
            if bytes[index] == UInt8(ascii: "\n") { records += 1 }
            index += 1
        }
        return records
    }

    /// Where to cut a file back to after a failed write left a partial record at its end.
    ///
    /// - Parameters:
    ///   - partialBytes: bytes of the unfinished record already in the file (batch offset written
    ///     minus ``lastEnd(in:before:)``).
    ///   - offset: the descriptor's offset after the writer's last write (O_APPEND: the end of
    ///     what the writer wrote).
    ///   - fileSize: the file's size now.
    /// - Returns: the length to truncate to, or nil when cutting would be wrong: something was
    ///   appended after the writer's bytes (another process shares the file), so the fragment
    ///   cannot be cut without losing that; the caller then starts the next record on a new line.
    static func truncationLength(partialBytes: Int, offset: Int64, fileSize: Int64) -> Int64? {
        guard partialBytes > 0, offset >= Int64(partialBytes), fileSize == offset else { return nil }
        return offset - Int64(partialBytes)
    }
}
