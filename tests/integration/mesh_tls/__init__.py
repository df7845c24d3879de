"""Node-to-node mTLS compiled by the control plane, between two real Envoys."""
