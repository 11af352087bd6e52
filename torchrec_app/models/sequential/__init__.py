"""Next-item recommendation: SASRec, BERT4Rec, GRU4Rec over a sharded item table (docs/SEQUENTIAL.md)."""
