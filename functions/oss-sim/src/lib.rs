//! `oss-sim`: placeholder while the component is written.
