// Package updated is twinslot's host update agent.
package updated
