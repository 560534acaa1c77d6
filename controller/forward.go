package controller

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// forwardedKey marks a call one controller forwarded to another, so that a call never
// bounces between two controllers that each think the other leads.
const forwardedKey = "llmscaler-forwarded-by"

// leaderMethods read the leader's live view (agents, instances, events); on a follower they
// are forwarded to the leader, so any controller answers them.
var leaderMethods = map[string]bool{
	llmscalerv1.AdminService_ListNodes_FullMethodName:        true,
	llmscalerv1.AdminService_GetNode_FullMethodName:          true,
	llmscalerv1.AdminService_GetDeployment_FullMethodName:    true,
	llmscalerv1.AdminService_ListDeployments_FullMethodName:  true,
	llmscalerv1.AdminService_ListInstances_FullMethodName:    true,
	llmscalerv1.AdminService_ListDecisions_FullMethodName:    true,
	llmscalerv1.AdminService_WatchEvents_FullMethodName:      true,
	llmscalerv1.AdminService_GetClusterStatus_FullMethodName: true,
	llmscalerv1.AdminService_WatchEndpoints_FullMethodName:   true,
	llmscalerv1.RouterService_ReportRouter_FullMethodName:    true,
}

// leaderConn returns a connection to the current leader, or a status error saying why
// there is none.
func (c *Controller) leaderConn(ctx context.Context) (*grpc.ClientConn, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return nil, status.Errorf(codes.Unavailable, "controller %s was told it leads by %s but does not: leadership is changing, retry", c.info.GetId(), md.Get(forwardedKey)[0])
	}
	v := c.currentView()
	if v.leader == nil || v.leader.GetGrpcAddress() == "" {
		return nil, status.Error(codes.Unavailable, "no leader elected yet")
	}
	if v.leader.GetId() == c.info.GetId() {
		return nil, status.Error(codes.Unavailable, "this controller is becoming leader; retry")
	}
	addr := v.leader.GetGrpcAddress()
	c.fwdMu.Lock()
	defer c.fwdMu.Unlock()
	if c.fwdConn != nil && c.fwdAddr == addr {
		return c.fwdConn, nil
	}
	if c.fwdConn != nil {
		c.fwdConn.Close()
		c.fwdConn = nil
	}
	conn, err := grpc.NewClient(addr, transport.DialOptions(c.cfg.Credentials)...)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "dial leader %s at %s: %v", v.leader.GetId(), addr, err)
	}
	c.fwdConn, c.fwdAddr = conn, addr
	return conn, nil
}

func (c *Controller) closeForwarding() {
	c.fwdMu.Lock()
	defer c.fwdMu.Unlock()
	if c.fwdConn != nil {
		c.fwdConn.Close()
		c.fwdConn = nil
	}
}

func (c *Controller) forwardContext(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for _, k := range []string{"authorization"} {
		if v := md.Get(k); len(v) > 0 {
			out.Set(k, v...)
		}
	}
	out.Set(forwardedKey, c.info.GetId())
	// The leader authorizes the call again, as the caller this controller forwards for.
	if cl := callerFrom(ctx); !cl.insecure {
		out.Set(callerKey, cl.id.URI())
	}
	return metadata.NewOutgoingContext(ctx, out)
}

// newMessages makes an empty request and reply message for a method, from the generated
// descriptors.
func newMessages(fullMethod string) (req, reply proto.Message, err error) {
	// "/llmscaler.v1.AdminService/ListNodes" -> service and method names.
	svc, meth := "", ""
	for i := len(fullMethod) - 1; i > 0; i-- {
		if fullMethod[i] == '/' {
			svc, meth = fullMethod[1:i], fullMethod[i+1:]
			break
		}
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, nil, err
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, nil, fmt.Errorf("%s is not a service", svc)
	}
	md := sd.Methods().ByName(protoreflect.Name(meth))
	if md == nil {
		return nil, nil, fmt.Errorf("no method %s", fullMethod)
	}
	in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil, nil, err
	}
	out, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, nil, err
	}
	return in.New().Interface(), out.New().Interface(), nil
}

// unaryForward sends leader methods that reach a follower on to the leader.
func (c *Controller) unaryForward(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !leaderMethods[info.FullMethod] || c.currentTerm() != nil {
		return handler(ctx, req)
	}
	conn, err := c.leaderConn(ctx)
	if err != nil {
		return nil, err
	}
	_, reply, err := newMessages(info.FullMethod)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "forward %s: %v", info.FullMethod, err)
	}
	if err := conn.Invoke(c.forwardContext(ctx), info.FullMethod, req, reply); err != nil {
		return nil, err
	}
	c.metrics.forwarded.Inc()
	return reply, nil
}

// streamForward sends the watches (WatchEvents, WatchEndpoints) that reach a follower on to
// the leader and relays what it sends.
func (c *Controller) streamForward(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !leaderMethods[info.FullMethod] || !info.IsServerStream || c.currentTerm() != nil {
		return handler(srv, ss)
	}
	ctx := ss.Context()
	conn, err := c.leaderConn(ctx)
	if err != nil {
		return err
	}
	req, reply, err := newMessages(info.FullMethod)
	if err != nil {
		return status.Errorf(codes.Internal, "forward %s: %v", info.FullMethod, err)
	}
	if err := ss.RecvMsg(req); err != nil {
		return err
	}
	cs, err := conn.NewStream(c.forwardContext(ctx), &grpc.StreamDesc{ServerStreams: true}, info.FullMethod)
	if err != nil {
		return err
	}
	if err := cs.SendMsg(req); err != nil {
		return err
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	// Pass the leader's headers on: they tell the client it is subscribed.
	if hdr, err := cs.Header(); err == nil {
		if err := ss.SendHeader(hdr); err != nil {
			return err
		}
	}
	c.metrics.forwarded.Inc()
	for {
		resp := reply.ProtoReflect().New().Interface()
		if err := cs.RecvMsg(resp); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if status.Code(err) == codes.Canceled && ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(resp); err != nil {
			return err
		}
	}
}
