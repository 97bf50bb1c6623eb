//! `order-worker`: placeholder while the component is written.
