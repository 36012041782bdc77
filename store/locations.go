package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
)

// LocationIndex maps K-Series business location ids to the tenants whose
// grants reach them, kept in the store so every replica routes a location
// the same way. Both backends implement it. Entries are a routing hint: a
// reader confirms a candidate against the tenant's record (its Locations
// and status), so an entry left behind by a crash or a deleted tenant
// misroutes nothing, and the next SetTenantLocations repairs it.
//
// Methods are safe for concurrent use.
type LocationIndex interface {
	// SetTenantLocations replaces the location ids indexed for tenant;
	// none removes the tenant from the index.
	SetTenantLocations(ctx context.Context, tenant string, locations []string) error
	// LocationTenants returns the tenants indexed for location, sorted;
	// none (and no error) when the location is unknown.
	LocationTenants(ctx context.Context, location string) ([]string, error)
}

var (
	_ LocationIndex = (*Bolt)(nil)
	_ LocationIndex = (*Redis)(nil)
)

// Bolt layout: bucket "locations" maps location + "\x00" + tenant to
// nothing; bucket "tenant_locations" maps tenant to its JSON id list.
var (
	bucketLocations       = []byte("locations")
	bucketTenantLocations = []byte("tenant_locations")
)

// ValidLocationID reports whether id can be a business location id in the
// location index: 1 to 128 bytes, no NUL.
func ValidLocationID(id string) bool {
	return id != "" && len(id) <= 128 && !slices.Contains([]byte(id), 0)
}

func validLocationArgs(tenant string, locations []string) error {
	if tenant == "" {
		return errors.New("store: tenant id is empty")
	}
	for _, l := range locations {
		if !ValidLocationID(l) {
			return fmt.Errorf("store: invalid location id for tenant %q", tenant)
		}
	}
	return nil
}

// SetTenantLocations implements LocationIndex in one bbolt transaction.
func (b *Bolt) SetTenantLocations(ctx context.Context, tenant string, locations []string) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if err := validLocationArgs(tenant, locations); err != nil {
		return err
	}
	return b.db.Update(func(tx *bbolt.Tx) error {
		idx, err := tx.CreateBucketIfNotExists(bucketLocations)
		if err != nil {
			return err
		}
		per, err := tx.CreateBucketIfNotExists(bucketTenantLocations)
		if err != nil {
			return err
		}
		var old []string
		if raw := per.Get([]byte(tenant)); raw != nil {
			_ = json.Unmarshal(raw, &old)
		}
		for _, l := range old {
			if err := idx.Delete([]byte(l + "\x00" + tenant)); err != nil {
				return err
			}
		}
		if len(locations) == 0 {
			return per.Delete([]byte(tenant))
		}
		for _, l := range locations {
			if err := idx.Put([]byte(l+"\x00"+tenant), nil); err != nil {
				return err
			}
		}
		raw, _ := json.Marshal(locations)
		return per.Put([]byte(tenant), raw)
	})
}

// LocationTenants implements LocationIndex.
func (b *Bolt) LocationTenants(ctx context.Context, location string) ([]string, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	var out []string
	err := b.db.View(func(tx *bbolt.Tx) error {
		idx := tx.Bucket(bucketLocations)
		if idx == nil {
			return nil
		}
		prefix := []byte(location + "\x00")
		c := idx.Cursor()
		for k, _ := c.Seek(prefix); k != nil && len(k) > len(prefix) && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
			out = append(out, string(k[len(prefix):]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt location %q: %w", location, err)
	}
	return out, nil
}

// Redis layout: set <prefix>loc:{<location>} holds the tenants of a
// location; set <prefix>tenant-locs:{<tenant>} the locations of a tenant.
// The keys live in different hash slots (Cluster), so an update is a
// sequence of single-key commands, not a transaction: readers confirm
// candidates against the records (see LocationIndex).
func (r *Redis) locationKey(loc string) string      { return r.prefix + "loc:{" + loc + "}" }
func (r *Redis) tenantLocsKey(tenant string) string { return r.prefix + "tenant-locs:{" + tenant + "}" }

// SetTenantLocations implements LocationIndex.
func (r *Redis) SetTenantLocations(ctx context.Context, tenant string, locations []string) error {
	if err := validLocationArgs(tenant, locations); err != nil {
		return err
	}
	old, err := r.client.SMembers(ctx, r.tenantLocsKey(tenant)).Result()
	if err != nil {
		return fmt.Errorf("store: redis locations of tenant %q: %w", tenant, err)
	}
	// Add before removing: a location kept across the update never
	// disappears from the index in between.
	_, err = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, l := range locations {
			p.SAdd(ctx, r.locationKey(l), tenant)
		}
		for _, l := range old {
			if !slices.Contains(locations, l) {
				p.SRem(ctx, r.locationKey(l), tenant)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: redis index locations of tenant %q: %w", tenant, err)
	}
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.tenantLocsKey(tenant))
		if len(locations) > 0 {
			members := make([]any, len(locations))
			for i, l := range locations {
				members[i] = l
			}
			p.SAdd(ctx, r.tenantLocsKey(tenant), members...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: redis locations of tenant %q: %w", tenant, err)
	}
	return nil
}

// LocationTenants implements LocationIndex.
func (r *Redis) LocationTenants(ctx context.Context, location string) ([]string, error) {
	ids, err := r.client.SMembers(ctx, r.locationKey(location)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis location %q: %w", location, err)
	}
	slices.Sort(ids)
	return ids, nil
}
