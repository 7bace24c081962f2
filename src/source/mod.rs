pub mod dir;
