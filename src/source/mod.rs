//! Sources: adapters that turn things (directories, ...) into byte streams. No repository access.

pub mod dir;

/// A directory as a deterministic tar stream, produced on a background thread. A failure while
/// walking reaches the reader as an I/O error, never as a clean end of stream.
pub fn dir_reader(root: std::path::PathBuf) -> crate::pipe::PipeReader {
    let (mut writer, reader) = crate::pipe::pipe(4);
    std::thread::spawn(move || match dir::write_dir_as_tar(&root, &mut writer) {
        Ok(_) => {
            let _ = writer.close();
        }
        Err(e) => writer.fail(e),
    });
    reader
}
