package controller

import (
	"context"
	"strings"
	"sync"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// access says who may call a method.
type access uint8

const (
	// accessNone: a method without a rule is refused, so that a new method is not open by
	// mistake.
	accessNone access = iota
	// accessAny: any authenticated caller (gRPC health and reflection).
	accessAny
	// accessRead: admin and readonly.
	accessRead
	// accessWrite: admin only; rate limited per caller.
	accessWrite
	// accessRouter: a router, or admin.
	accessRouter
	// accessAgent: a node; its hello must then name the node of its certificate.
	accessAgent
)

// who says in words who has an access, for refusals.
func (a access) who() string {
	switch a {
	case accessAny:
		return "any authenticated caller"
	case accessRead:
		return "admin or readonly"
	case accessWrite:
		return "admin"
	case accessRouter:
		return "router or admin"
	case accessAgent:
		return "a node identity"
	}
	return "a rule, and it has none"
}

// methodAccess is the authorization table of the controller's own services.
var methodAccess = map[string]access{
	llmscalerv1.AgentService_Connect_FullMethodName: accessAgent,

	llmscalerv1.AdminService_ApplyDeployment_FullMethodName:  accessWrite,
	llmscalerv1.AdminService_DeleteDeployment_FullMethodName: accessWrite,
	llmscalerv1.AdminService_ScaleDeployment_FullMethodName:  accessWrite,
	llmscalerv1.AdminService_CordonNode_FullMethodName:       accessWrite,
	llmscalerv1.AdminService_UncordonNode_FullMethodName:     accessWrite,
	llmscalerv1.AdminService_DrainNode_FullMethodName:        accessWrite,

	llmscalerv1.AdminService_ListNodes_FullMethodName:        accessRead,
	llmscalerv1.AdminService_GetNode_FullMethodName:          accessRead,
	llmscalerv1.AdminService_GetDeployment_FullMethodName:    accessRead,
	llmscalerv1.AdminService_ListDeployments_FullMethodName:  accessRead,
	llmscalerv1.AdminService_ListInstances_FullMethodName:    accessRead,
	llmscalerv1.AdminService_ListDecisions_FullMethodName:    accessRead,
	llmscalerv1.AdminService_WatchEvents_FullMethodName:      accessRead,
	llmscalerv1.AdminService_GetClusterStatus_FullMethodName: accessRead,

	llmscalerv1.AdminService_WatchEndpoints_FullMethodName: accessRouter,
	llmscalerv1.RouterService_ReportRouter_FullMethodName:  accessRouter,
}

// openServices are the services any authenticated caller may use: grpcurl needs reflection,
// load balancers need health.
var openServices = []string{"/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"}

// accessOf is who may call a full method name.
func accessOf(method string) access {
	if a, ok := methodAccess[method]; ok {
		return a
	}
	for _, p := range openServices {
		if strings.HasPrefix(method, p) {
			return accessAny
		}
	}
	return accessNone
}

// caller is who a call runs for.
type caller struct {
	id transport.Identity
	// insecure: the controller runs plaintext, so the caller is unknown and treated as admin.
	insecure bool
	// forwarded: a controller forwarded the call for id.
	forwarded bool
}

// insecureActor is the identity every caller of a plaintext controller is recorded as.
const insecureActor = "insecure"

// String is the caller's identity in short form ("admin", "node/n1"), as the journal records it.
func (c caller) String() string {
	if c.insecure {
		return insecureActor
	}
	return c.id.String()
}

// describe is the caller in refusals.
func (c caller) describe() string {
	if c.forwarded {
		return c.String() + " (forwarded by a controller)"
	}
	return c.String()
}

// may reports whether the caller has access a. A plaintext controller's callers have all of
// it: there is no identity to check.
func (c caller) may(a access) bool {
	if a == accessNone {
		return false
	}
	if c.insecure {
		return true
	}
	r := c.id.Role
	switch a {
	case accessAny:
		return true
	case accessRead:
		return r == transport.RoleAdmin || r == transport.RoleReadonly
	case accessWrite:
		return r == transport.RoleAdmin
	case accessRouter:
		return r == transport.RoleRouter || r == transport.RoleAdmin
	case accessAgent:
		return r == transport.RoleNode
	}
	return false
}

// authorize decides one call, as a status error when it is refused.
func authorize(c caller, method string) error {
	a := accessOf(method)
	if c.may(a) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "%s may not call %s: it needs %s", c.describe(), strings.TrimPrefix(method, "/"), a.who())
}

// callerKey is the metadata in which a forwarding controller names the caller it forwards
// for, as an identity URI. The leader believes it only from a controller's certificate.
const callerKey = "llmscaler-caller"

// callerOf finds who a call runs for: the identity of the client certificate, or of the
// caller a controller forwards for.
func (c *Controller) callerOf(ctx context.Context) (caller, error) {
	if c.cfg.Credentials == transport.Plaintext {
		return caller{insecure: true}, nil
	}
	id, err := transport.PeerIdentity(ctx)
	if err != nil {
		return caller{}, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	if id.Role == transport.RoleController {
		if v := metadata.ValueFromIncomingContext(ctx, callerKey); len(v) > 0 {
			fwd, err := transport.ParseIdentity(v[0])
			if err != nil {
				return caller{}, status.Errorf(codes.InvalidArgument, "%s metadata: %v", callerKey, err)
			}
			return caller{id: fwd, forwarded: true}, nil
		}
	}
	return caller{id: id}, nil
}

type callerCtxKey struct{}

func withCaller(ctx context.Context, c caller) context.Context {
	return context.WithValue(ctx, callerCtxKey{}, c)
}

// callerFrom returns the caller the authorization interceptor put in ctx. A context without
// one (a handler called directly) is the plaintext caller.
func callerFrom(ctx context.Context) caller {
	if c, ok := ctx.Value(callerCtxKey{}).(caller); ok {
		return c
	}
	return caller{insecure: true}
}

// admit authorizes a call and applies the rate limit of admin mutations.
func (c *Controller) admit(ctx context.Context, method string) (caller, error) {
	cl, err := c.callerOf(ctx)
	if err == nil {
		err = authorize(cl, method)
	}
	if err != nil {
		c.metrics.refused.WithLabelValues(status.Code(err).String()).Inc()
		c.log.Warn("call refused", "method", method, "caller", cl.describe(), "error", status.Convert(err).Message())
		return cl, err
	}
	if accessOf(method) == accessWrite && !c.limits.allow(cl.String()) {
		c.metrics.refused.WithLabelValues(codes.ResourceExhausted.String()).Inc()
		c.log.Warn("call refused: rate limit", "method", method, "caller", cl.describe())
		return cl, status.Errorf(codes.ResourceExhausted, "%s made more than %g changing admin calls a second (bursts of %d): slow down and retry",
			cl.describe(), float64(c.limits.every), c.limits.burst)
	}
	return cl, nil
}

// unaryAuth authorizes every unary call before anything else sees it.
func (c *Controller) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	cl, err := c.admit(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(withCaller(ctx, cl), req)
}

// streamAuth authorizes every stream before anything else sees it.
func (c *Controller) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	cl, err := c.admit(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, callerStream{ServerStream: ss, ctx: withCaller(ss.Context(), cl)})
}

// callerStream is a server stream whose context carries the caller.
type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s callerStream) Context() context.Context { return s.ctx }

// Rate limit of admin mutations, per caller identity: generous for people and scripts, a
// brake on a runaway loop.
const (
	DefaultAdminRate  = 10.0
	DefaultAdminBurst = 50
	// maxLimiters bounds the limiters kept; past it they start afresh (identities come from
	// certificates, so there are few).
	maxLimiters = 4096
)

// limiters holds one token bucket per caller identity.
type limiters struct {
	every rate.Limit
	burst int

	mu sync.Mutex
	by map[string]*rate.Limiter
}

func newLimiters(perSecond float64, burst int) *limiters {
	l := &limiters{every: rate.Limit(perSecond), burst: burst, by: map[string]*rate.Limiter{}}
	if perSecond < 0 {
		l.every = rate.Inf
	}
	return l
}

func (l *limiters) allow(who string) bool {
	if l.every == rate.Inf {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.by[who]
	if lim == nil {
		if len(l.by) >= maxLimiters {
			clear(l.by)
		}
		lim = rate.NewLimiter(l.every, l.burst)
		l.by[who] = lim
	}
	return lim.Allow()
}
