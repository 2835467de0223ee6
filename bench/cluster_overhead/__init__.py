"""What the standalone cluster and the object store cost the nightly pipeline on one machine."""
