//! `bss-commerce`: placeholder while the component is written.
