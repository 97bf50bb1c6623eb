//! `bss-quote`: placeholder while the component is written.
