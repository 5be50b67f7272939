//! keyhold-kms
