package server

import "context"

// AutoPromoteOnce runs one round of automatic promotion now (tests do not wait for the ticker).
func (s *Server) AutoPromoteOnce(ctx context.Context) error { return s.autoPromoteOnce(ctx) }

// AdvanceWavesOnce runs one round of wave advancement now.
func (s *Server) AdvanceWavesOnce(ctx context.Context) error { return s.advanceWavesOnce(ctx) }
